"""Who signs: a raw private key (`Signer`, the fast path), or anything with web3's
`sign_transaction` (`AccountSigner`: an eth_account `LocalAccount`, a KMS or hardware signer).
`as_signer` takes any of them. Both sign EIP-1559 (type 2) and legacy EIP-155 transactions."""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Any, Protocol, runtime_checkable

import coincurve
import rlp

from .abi import checksum_address, keccak

_KEY = re.compile(r"(0x)?[0-9a-fA-F]{64}")
# A key in any form: any case, with or without 0x, inside any text (quoted, `NAME=0x..`, `0X..`,
# followed by a comma); a longer hex run may hide one too.
KEY_RUN = re.compile(r"(?:0[xX])?[0-9a-fA-F]{64,}")
_in_use: set[str] = set()  # this process's keys, lower-case hex: masked in every text we write
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


@runtime_checkable
class TxSigner(Protocol):
    """What a TxSender needs: an address, and `sign(tx) -> (raw transaction, hash)`."""

    address: str

    def sign(self, tx: dict[str, Any]) -> tuple[bytes, bytes]: ...


def parse_private_key(value: Any) -> bytes:
    """Exactly 32 bytes, as 64 hex digits (0x-prefixed or not), a SecretStr of those, or bytes; a
    valid secp256k1 scalar. Anything else raises ValueError without echoing the value (a key with
    a digit missing would sign for another account)."""
    if hasattr(value, "get_secret_value"):
        value = value.get_secret_value()
    if isinstance(value, str) and _KEY.fullmatch(value.strip()):
        raw = bytes.fromhex(value.strip().removeprefix("0x"))
    elif isinstance(value, (bytes, bytearray)) and len(value) == 32:
        raw = bytes(value)
    else:
        raise ValueError("invalid private key: expected exactly 32 bytes (64 hex digits)")
    if not 0 < int.from_bytes(raw, "big") < SECP256K1_N:
        raise ValueError("invalid private key: not a secp256k1 scalar")
    _in_use.add(raw.hex())
    return raw


def _unsigned_fields(tx: dict[str, Any]) -> tuple[bytes, list[Any]]:
    """(type prefix, RLP fields before the signature) of a type-2 or legacy transaction dict."""
    to = tx.get("to")
    to_raw = bytes.fromhex(to[2:]) if to else b""
    data = bytes(tx.get("data", b""))
    if "gasPrice" in tx:  # legacy, EIP-155: chain id in the signed payload
        return b"", [tx["nonce"], tx["gasPrice"], tx["gas"], to_raw, tx.get("value", 0), data]
    fields = [
        tx["chainId"],
        tx["nonce"],
        tx["maxPriorityFeePerGas"],
        tx["maxFeePerGas"],
        tx["gas"],
        to_raw,
        tx.get("value", 0),
        data,
        [],
    ]
    return b"\x02", fields


class Signer:
    """A private key that signs. Its repr, str and pickled form show the address only.

    Transactions are signed directly (RLP, keccak, libsecp256k1 through coincurve): bench/micro.py
    measures it against eth_account's `sign_transaction` (BENCHMARKS.md), and tests/test_tx.py
    checks the bytes are the same."""

    __slots__ = ("_key", "address")

    def __init__(self, private_key: Any) -> None:
        key = coincurve.PrivateKey(parse_private_key(private_key))
        self._key = key
        self.address: str = checksum_address(keccak(key.public_key.format(compressed=False)[1:])[12:])

    def sign(self, tx: dict[str, Any]) -> tuple[bytes, bytes]:
        """A transaction dict (type 2, or legacy with `gasPrice`) -> (raw transaction, hash)."""
        prefix, fields = _unsigned_fields(tx)
        if prefix:
            sig = self._key.sign_recoverable(keccak(prefix + rlp.encode(fields)), hasher=None)
            v = sig[64]
        else:
            sig = self._key.sign_recoverable(keccak(rlp.encode([*fields, tx["chainId"], 0, 0])), hasher=None)
            v = sig[64] + 35 + 2 * tx["chainId"]
        raw = prefix + rlp.encode([*fields, v, int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:64], "big")])
        return raw, keccak(raw)

    def __repr__(self) -> str:
        return f"Signer({self.address})"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("a Signer holds a private key and is not serialisable")


class AccountSigner:
    """Any object with an `address` and web3's `sign_transaction(dict)` (returning an object with
    `raw_transaction` and `hash`): an eth_account `LocalAccount`, a cloud KMS or hardware signer.
    The key stays with it."""

    def __init__(self, account: Any) -> None:
        self.account = account
        self.address: str = checksum_address(account.address)
        key = getattr(account, "key", None)  # a LocalAccount's: masked in every text we write, as a raw key's
        if isinstance(key, bytes | bytearray) and len(key) == 32:
            _in_use.add(bytes(key).hex())

    def sign(self, tx: dict[str, Any]) -> tuple[bytes, bytes]:
        body = {k: v for k, v in tx.items() if k != "type"}
        body["data"] = "0x" + bytes(tx.get("data", b"")).hex()
        if "gasPrice" not in tx:
            body["type"] = 2
        if tx.get("to"):
            body["to"] = checksum_address(tx["to"])
        signed = self.account.sign_transaction(body)
        raw = getattr(signed, "raw_transaction", None) or signed.rawTransaction  # eth_account < 0.13
        return bytes(raw), bytes(signed.hash)

    def __repr__(self) -> str:
        return f"AccountSigner({self.address})"


def as_signer(value: Any) -> TxSigner:
    """A TxSigner from a Signer or AccountSigner (as is), an object with `sign_transaction`
    (wrapped in AccountSigner), or a private key (hex, bytes or SecretStr: a Signer)."""
    if isinstance(value, (Signer, AccountSigner)):
        return value
    if hasattr(value, "sign_transaction") and hasattr(value, "address"):
        return AccountSigner(value)
    if isinstance(value, TxSigner):
        return value
    return Signer(value)


def looks_like_private_key(value: Any) -> bool:
    """Whether `value` holds something shaped like a private key: a run of 64 or more hex digits
    anywhere in it. Such a value in a user-given field that is not a key is refused unechoed."""
    return isinstance(value, str) and KEY_RUN.search(value) is not None


def holds_key_in_use(value: Any) -> bool:
    """Whether `value` (a str) holds a key this process has parsed, in any case, with or without
    0x: for fields where other 64-hex values belong (tx hashes, content-addressed URLs)."""
    return isinstance(value, str) and mask_keys(value) != value


def mask_keys(text: str, everything: bool = False) -> str:
    """`text` with each hex run holding a key this process has parsed replaced by `<redacted>`
    (any case, with or without 0x); with `everything`, each 64-hex run (text echoing user input,
    where no transaction hash belongs)."""
    if not _in_use and not everything:
        return text

    def hide(match: re.Match[str]) -> str:
        run = match.group().lower()
        return "<redacted>" if everything or any(key in run for key in _in_use) else match.group()

    return KEY_RUN.sub(hide, text)


def derive_secret(signer: Any, label: str) -> bytes | None:
    """A 32-byte secret for `label`, derived one-way from the signer's private key (HMAC-SHA256
    keyed by it): it proves "written by a holder of this key" without revealing the key. None for a
    signer whose key stays elsewhere (a KMS or hardware signer)."""
    if isinstance(signer, Signer):
        raw = signer._key.secret
    else:
        raw = getattr(getattr(signer, "account", signer), "key", None)
        if not isinstance(raw, (bytes, bytearray)) or len(raw) != 32:
            return None
    return hmac.new(bytes(raw), label.encode(), hashlib.sha256).digest()
