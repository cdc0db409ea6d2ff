"""Transaction signing: our direct EIP-1559 signer produces exactly eth_account's bytes."""

from __future__ import annotations

import random

from eth_account import Account
from eth_utils import to_checksum_address

from ogpu_prefect.chain.devnet import DEV_KEYS
from ogpu_prefect.chain.signing import Signer


def test_signatures_match_eth_account_byte_for_byte() -> None:
    rng = random.Random(3)
    for key in DEV_KEYS[:4]:
        signer = Signer(key)
        for _ in range(25):
            tx = {
                "chainId": rng.choice([31337, 1071, 200820172034]),
                "nonce": rng.randrange(0, 10**6),
                "maxPriorityFeePerGas": rng.randrange(0, 10**10),
                "maxFeePerGas": rng.randrange(10**9, 10**12),
                "gas": rng.randrange(21000, 10**7),
                "value": rng.choice([0, 1, 10**18 + 7]),
                "data": rng.randbytes(rng.randrange(0, 300)),
                "type": 2,
                "to": rng.choice([None, "0x" + rng.randbytes(20).hex()]),
            }
            ours_raw, ours_hash = signer.sign(tx)
            ref_tx = {k: v for k, v in tx.items() if not (k == "to" and v is None)}
            if "to" in ref_tx:
                ref_tx["to"] = to_checksum_address(ref_tx["to"])
            ref = Account.sign_transaction(ref_tx, key)
            assert ours_raw == bytes(ref.raw_transaction)
            assert ours_hash == bytes(ref.hash)
