"""Who signs: a raw key (our direct signer), an eth_account LocalAccount, or any object with web3's
`sign_transaction` (here a stand-in for a remote signer that never hands out its key). All sign
the same bytes as eth_account, type 2 and legacy. No chain needed; tests/test_chain.py sends
transactions signed each way."""

from __future__ import annotations

import random
from typing import Any

from eth_account import Account
from eth_utils import to_checksum_address

from ogpu_prefect.chain.devnet import DEV_KEYS
from ogpu_prefect.chain.signing import AccountSigner, Signer, as_signer


class RemoteSigner:
    """Holds its key out of reach (as a KMS would) and signs what it is asked to."""

    def __init__(self, key: str) -> None:
        self._account = Account.from_key(key)
        self.address = self._account.address
        self.requests = 0

    def sign_transaction(self, tx: dict[str, Any]) -> Any:
        self.requests += 1
        return self._account.sign_transaction(tx)


def transactions(seed: int, legacy: bool) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for _ in range(20):
        tx = {
            "chainId": rng.choice([31337, 1071, 200820172034]),
            "nonce": rng.randrange(0, 10**6),
            "gas": rng.randrange(21000, 10**7),
            "value": rng.choice([0, 1, 10**18 + 7]),
            "data": rng.randbytes(rng.randrange(0, 300)),
            "to": rng.choice([None, "0x" + rng.randbytes(20).hex()]),
        }
        if legacy:
            tx["gasPrice"] = rng.randrange(1, 10**12)
        else:
            tx.update(type=2, maxPriorityFeePerGas=rng.randrange(0, 10**10), maxFeePerGas=rng.randrange(10**9, 10**12))
        out.append(tx)
    return out


def reference(tx: dict[str, Any], key: str) -> tuple[bytes, bytes]:
    ref = {k: v for k, v in tx.items() if not (k == "to" and v is None)}
    if "to" in ref:
        ref["to"] = to_checksum_address(ref["to"])
    signed = Account.sign_transaction(ref, key)
    return bytes(signed.raw_transaction), bytes(signed.hash)


def test_every_signer_signs_eth_accounts_bytes_type_2_and_legacy() -> None:
    key = DEV_KEYS[2]
    signers = [Signer(key), as_signer(Account.from_key(key)), as_signer(RemoteSigner(key))]
    assert isinstance(signers[1], AccountSigner) and isinstance(signers[2], AccountSigner)
    assert len({s.address for s in signers}) == 1
    for legacy in (False, True):
        for tx in transactions(5, legacy):
            want = reference(tx, key)
            for signer in signers:
                assert signer.sign(tx) == want, (type(signer).__name__, legacy)


def test_as_signer_takes_a_key_in_any_form() -> None:
    from pydantic import SecretStr

    key = DEV_KEYS[3]
    assert as_signer(SecretStr(key)).address == as_signer(bytes.fromhex(key[2:])).address == Signer(key).address
