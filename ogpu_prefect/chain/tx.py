"""Build, sign and send transactions explicitly.

`TxSender` owns one account's nonces on one chain. It can pipeline many signed transactions before
waiting for any receipt, then collect receipts in bulk (JSON-RPC batches). A transient RPC failure
re-sends the *same signed bytes*, so a logical transaction is never sent twice: if the node already
has it ("already known", "nonce too low"), the hash is looked up instead.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Sequence

import coincurve
import rlp
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak

from .abi import checksum_address
from .errors import NonceError, RpcError, TxReceiptTimeoutError, TxRevertError, TxRpcError, revert_error
from .rpc import Rpc

log = logging.getLogger(__name__)

RECEIPT_BATCH = 200


class Signer:
    """A private key that signs. Its repr, str and pickled form show the address only.

    EIP-1559 transactions are signed directly (RLP, keccak, libsecp256k1 through coincurve): about
    a tenth of eth_account's cost per transaction, which matters when a batch is thousands of
    them. `tests/test_tx.py` checks the bytes against eth_account's."""

    __slots__ = ("_key", "address")

    def __init__(self, private_key: Any) -> None:
        if hasattr(private_key, "get_secret_value"):
            private_key = private_key.get_secret_value()
        try:
            account: LocalAccount = Account.from_key(private_key)
            self._key = coincurve.PrivateKey(bytes(account.key))
        except Exception:
            raise ValueError("invalid private key (expected 32 bytes as hex)") from None
        self.address: str = account.address

    def sign(self, tx: dict[str, Any]) -> tuple[bytes, bytes]:
        """An EIP-1559 (type 2) transaction dict -> (raw transaction, hash)."""
        to = tx.get("to")
        fields = [
            tx["chainId"], tx["nonce"], tx["maxPriorityFeePerGas"], tx["maxFeePerGas"], tx["gas"],
            bytes.fromhex(to[2:]) if to else b"", tx.get("value", 0), bytes(tx.get("data", b"")), [],
        ]
        digest = keccak(b"\x02" + rlp.encode(fields))
        sig = self._key.sign_recoverable(digest, hasher=None)
        raw = b"\x02" + rlp.encode(fields + [sig[64], int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:64], "big")])
        return raw, keccak(raw)

    def __repr__(self) -> str:
        return f"Signer({self.address})"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("a Signer holds a private key and is not serialisable")


@dataclass(frozen=True)
class Call:
    """An unsigned contract call: where (empty for a contract creation), what, how much coin, and
    a name for error messages."""

    to: str
    data: bytes
    value: int = 0
    context: str = ""


@dataclass
class Log:
    address: str
    topics: list[bytes]
    data: bytes
    block_number: int
    tx_hash: str
    log_index: int

    @classmethod
    def from_rpc(cls, lg: dict[str, Any]) -> Log:
        return cls(
            checksum_address(lg["address"]), [bytes.fromhex(t[2:]) for t in lg["topics"]],
            bytes.fromhex(lg["data"][2:]), int(lg["blockNumber"], 16), lg["transactionHash"], int(lg["logIndex"], 16),
        )


@dataclass
class Receipt:
    tx_hash: str
    status: int
    block_number: int
    gas_used: int
    logs: list[Log]
    context: str = ""
    contract_address: str | None = None

    @classmethod
    def from_rpc(cls, r: dict[str, Any], context: str = "") -> Receipt:
        logs = [Log.from_rpc(lg) for lg in r["logs"]]
        ca = r.get("contractAddress")
        return cls(
            r["transactionHash"], int(r["status"], 16), int(r["blockNumber"], 16), int(r["gasUsed"], 16), logs,
            context, checksum_address(ca) if ca else None,
        )

    @cached_property
    def events(self) -> list[Any]:
        """Protocol events decoded from this receipt's logs (see events.decode_logs)."""
        from .events import decode_logs

        return decode_logs(self.logs)


@dataclass
class PendingTx:
    call: Call
    nonce: int
    tx_hash: str
    raw: bytes = field(repr=False)


class TxSender:
    """Sends one account's transactions on one chain. Thread-safe."""

    def __init__(
        self,
        rpc: Rpc,
        signer: Signer,
        chain_id: int,
        *,
        gas_margin: float = 1.25,
        receipt_timeout: float = 120.0,
        poll_interval: float = 0.005,
    ) -> None:
        self.rpc = rpc
        self.signer = signer
        self.chain_id = chain_id
        self.gas_margin = gas_margin
        self.receipt_timeout = receipt_timeout
        self.poll_interval = poll_interval
        self._lock = threading.Lock()
        self._nonce: int | None = None
        self._dev: bool | None = None

    @property
    def address(self) -> str:
        return self.signer.address

    def __repr__(self) -> str:
        return f"TxSender({self.address} on {self.rpc.url})"

    # ---- nonces and fees ----

    def _next_nonces(self, n: int) -> list[int]:
        with self._lock:
            if self._nonce is None:
                self._nonce = int(self.rpc.call("eth_getTransactionCount", [self.address, "pending"]), 16)
            start = self._nonce
            self._nonce += n
            return list(range(start, start + n))

    def resync_nonce(self) -> None:
        """Forget the local nonce; the next send reads it from the node."""
        with self._lock:
            self._nonce = None

    def _fees(self, total_gas: int) -> dict[str, int]:
        """EIP-1559 fees for a batch using `total_gas`. A pipelined batch fills blocks, and each
        full block raises the base fee by 12.5%: the fee cap covers the blocks the batch needs
        (plus two), or its last transactions would sit underpriced. Only the base fee is paid."""
        block, tip = self.rpc.batch([("eth_getBlockByNumber", ["latest", False]), ("eth_maxPriorityFeePerGas", [])])
        tip = int(tip, 16) if isinstance(tip, str) else 1_000_000_000
        if isinstance(block, dict) and block.get("baseFeePerGas"):
            base, limit = int(block["baseFeePerGas"], 16), int(block["gasLimit"], 16)
        else:
            base, limit = int(self.rpc.call("eth_gasPrice"), 16), 30_000_000
        blocks = -(-total_gas // max(limit, 1)) + 2
        headroom = min(1.125**blocks, 16.0)
        return {"maxFeePerGas": int(2 * base * headroom) + tip, "maxPriorityFeePerGas": tip}

    # ---- estimate, sign, send ----

    def estimate(self, calls: Sequence[Call]) -> list[int]:
        """Gas for each call against the latest state, with the margin. A call that would revert
        raises its typed error here, before anything is sent."""
        results = self.rpc.batch([("eth_estimateGas", [self._tx_json(c)]) for c in calls])
        gas: list[int] = []
        for call, r in zip(calls, results):
            if isinstance(r, RpcError):
                data = r.revert_data
                if data is not None or "revert" in r.message.lower():
                    raise revert_error(data or b"", context=call.context) from None
                raise r
            if isinstance(r, Exception):
                raise r
            gas.append(int(int(r, 16) * self.gas_margin) + 10_000)
        return gas

    def sign(self, calls: Sequence[Call], gas: Sequence[int] | int | None = None) -> list[PendingTx]:
        """Signs calls with consecutive local nonces. `gas`: per call, one limit for all, or None
        to estimate (which raises the typed revert of a call that cannot succeed)."""
        if gas is None:
            limits = self.estimate(calls)
        elif isinstance(gas, int):
            limits = [gas] * len(calls)
        else:
            limits = list(gas)
        fees = self._fees(sum(limits))
        nonces = self._next_nonces(len(calls))
        out = []
        for call, nonce, limit in zip(calls, nonces, limits):
            tx = {"chainId": self.chain_id, "nonce": nonce, "data": call.data, "value": call.value, "gas": limit,
                  "type": 2, **fees}
            if call.to:  # no `to`: a contract creation
                tx["to"] = call.to
            raw, h = self.signer.sign(tx)
            out.append(PendingTx(call, nonce, "0x" + h.hex(), raw))
        return out

    def broadcast(self, pending: Sequence[PendingTx]) -> None:
        """Sends signed transactions in JSON-RPC batches. Safe to call again with the same ones."""
        results = self.rpc.batch([("eth_sendRawTransaction", ["0x" + p.raw.hex()]) for p in pending])
        unclear = []
        for p, r in zip(pending, results):
            if isinstance(r, RpcError) and _already_known(r):
                continue  # the node has it: it was sent before, maybe by a retried batch
            if isinstance(r, RpcError) and _nonce_too_low(r):
                unclear.append(p)
            elif isinstance(r, Exception):
                self.resync_nonce()
                raise r
        for p in unclear:  # our nonce is used: by this very tx (fine) or by someone else's
            if self.rpc.call("eth_getTransactionByHash", [p.tx_hash]) is None:
                self.resync_nonce()
                raise NonceError(f"nonce {p.nonce} of {self.address} was used by another transaction")

    def send(self, calls: Sequence[Call], gas: Sequence[int] | int | None = None) -> list[PendingTx]:
        """Signs and broadcasts without waiting: the pipelined path."""
        pending = self.sign(calls, gas)
        self.broadcast(pending)
        return pending

    # ---- receipts ----

    def wait(self, pending: Sequence[PendingTx], *, check: bool = True) -> list[Receipt]:
        """Receipts for sent transactions, polled in bulk. With `check`, a reverted one raises its
        typed error (after all receipts are in, so nothing is left unaccounted for)."""
        receipts: dict[str, Receipt] = {}
        deadline = time.monotonic() + self.receipt_timeout
        delay = self.poll_interval
        rebroadcast_at = time.monotonic() + 5.0
        seen, stalled_since = 0, time.monotonic()
        suspects: set[str] = set()
        while True:
            missing = [p for p in pending if p.tx_hash not in receipts]
            if not missing:
                break
            self._collect_receipts(missing, receipts)
            if len(receipts) == len(pending):
                break
            now = time.monotonic()
            if now > deadline:
                raise TxReceiptTimeoutError(self._describe_unmined([p for p in pending if p.tx_hash not in receipts]))
            if len(receipts) > seen:
                seen, stalled_since = len(receipts), now
            elif now - stalled_since > 1.0:
                suspects = self._check_not_replaced([p for p in pending if p.tx_hash not in receipts], receipts,
                                                    suspects)
                if self._is_dev_node():
                    # anvil's automine mines when a transaction arrives; what did not fit in
                    # that block waits for the next arrival. Mine one instead of waiting forever.
                    self.rpc.call("evm_mine")
                    self._requeue_stuck([p for p in pending if p.tx_hash not in receipts])
                stalled_since = now
            if now > rebroadcast_at:  # a node may have dropped them: same bytes, same hashes
                self.broadcast([p for p in pending if p.tx_hash not in receipts])
                rebroadcast_at = now + 5.0
            time.sleep(delay)
            delay = min(delay * 1.5, 0.05)
        out = [receipts[p.tx_hash] for p in pending]
        if check:
            failed = [r for r in out if r.status != 1]
            if failed:
                raise self.explain(failed[0])
        return out

    def _collect_receipts(self, pending: Sequence[PendingTx], receipts: dict[str, Receipt]) -> None:
        """Adds the receipts the node has for `pending` to `receipts`, a JSON-RPC batch at a time
        (each decoded before the next is fetched: 10,000 raw receipts at once are ~100 MB)."""
        for start in range(0, len(pending), RECEIPT_BATCH):
            part = pending[start:start + RECEIPT_BATCH]
            results = self.rpc.batch([("eth_getTransactionReceipt", [p.tx_hash]) for p in part])
            for p, r in zip(part, results):
                if isinstance(r, dict):
                    receipts[p.tx_hash] = Receipt.from_rpc(r, p.call.context)

    def _check_not_replaced(self, missing: Sequence[PendingTx], receipts: dict[str, Receipt],
                            suspects: set[str]) -> set[str]:
        """Raises NonceError when a transaction can never be mined: its nonce was used by another
        transaction of this account (sent by another process, or left in the pool). A node can
        count a nonce a moment before it serves the receipt, so a transaction is only judged lost
        when two checks a stall apart agree; returns this check's suspects."""
        used = int(self.rpc.call("eth_getTransactionCount", [self.address, "latest"]), 16)
        stale = [p for p in missing if p.nonce < used]
        if not stale:
            return set()
        self._collect_receipts(stale, receipts)
        lost = [p for p in stale if p.tx_hash not in receipts]
        confirmed = [p for p in lost if p.tx_hash in suspects]
        if confirmed:
            self.resync_nonce()
            raise NonceError(f"{len(confirmed)} transaction(s) of {self.address} will never be mined: "
                             f"nonce {confirmed[0].nonce} was used by another transaction")
        return {p.tx_hash for p in lost}

    def transact(self, call: Call, gas: int | None = None) -> Receipt:
        """Estimate, sign, send, wait; raises the typed error of a revert."""
        return self.wait(self.send([call], gas))[0]

    def transact_many(self, calls: Sequence[Call], gas: Sequence[int] | int | None = None) -> list[Receipt]:
        return self.wait(self.send(calls, gas))

    def explain(self, receipt: Receipt) -> TxRevertError:
        """The typed error of a mined, reverted transaction, by replaying it: on the state before
        its block, or, where the node keeps no history (anvil --prune-history), on the state of its
        block (a reverted transaction changes no contract state)."""
        tx = self.rpc.call("eth_getTransactionByHash", [receipt.tx_hash])
        call = {"from": tx["from"], "data": tx["input"], "value": tx["value"], "gas": tx["gas"]}
        if tx.get("to"):
            call["to"] = tx["to"]
        for block in (receipt.block_number - 1, receipt.block_number):
            try:
                self.rpc.call("eth_call", [call, hex(max(block, 0))])
            except RpcError as e:
                if e.revert_data is not None:
                    return revert_error(e.revert_data, context=receipt.context)
                log.debug("replay at block %d failed: %s", block, e)
        return TxRevertError("mined but reverted", context=receipt.context)

    def _requeue_stuck(self, missing: Sequence[PendingTx]) -> None:
        """anvil only. Its pool decides at insertion whether a transaction waits for its
        predecessor, from the nonce it read before inserting; when the block that mined the
        predecessor lands in between, the transaction at the account's next nonce waits for it
        forever, *queued* with everything after it (seen under pipelined load: 0 pending, 43
        queued from the next nonce). `anvil_dropTransaction` only drops ready ones and a resend of
        the same bytes is refused as already imported, so: remove this account's transactions
        from the pool and send ours again, in nonce order (same hashes, nothing sent twice). A
        concurrent batch of the same account is removed too; its own wait sends it again at its
        next rebroadcast (within 5 s)."""
        if not missing:
            return
        head = min(missing, key=lambda p: p.nonce)
        mined, pool = self.rpc.batch([("eth_getTransactionCount", [self.address, "latest"]), ("txpool_status", [])])
        if not (isinstance(mined, str) and isinstance(pool, dict)) or int(mined, 16) != head.nonce:
            return
        if int(pool.get("pending", "0x0"), 16) == 0 and int(pool.get("queued", "0x0"), 16) > 0:
            log.warning("%d transaction(s) of %s stuck in anvil's queue from nonce %d: sending them again",
                        len(missing), self.address, head.nonce)
            try:
                self.rpc.call("anvil_removePoolTransactions", [self.address])
            except RpcError as e:  # an anvil without it: the rebroadcast is all we have
                log.warning("anvil_removePoolTransactions failed: %s", e)
                return
            self.broadcast(sorted(missing, key=lambda p: p.nonce))

    def _describe_unmined(self, missing: Sequence[PendingTx]) -> str:
        """Why transactions may not be mined, from what the node says: nonce gap, fee, pool."""
        nonces = sorted(p.nonce for p in missing)
        text = f"{len(missing)} transaction(s) not mined in {self.receipt_timeout:.0f}s (nonces {nonces[0]}-{nonces[-1]})"
        try:
            mined, pool, block = self.rpc.batch([
                ("eth_getTransactionCount", [self.address, "latest"]), ("txpool_status", []),
                ("eth_getBlockByNumber", ["latest", False])])
            if isinstance(mined, str):
                text += f"; the node's next nonce for {self.address} is {int(mined, 16)}"
            if isinstance(pool, dict):
                text += f"; its pool: {int(pool.get('pending', '0x0'), 16)} pending, {int(pool.get('queued', '0x0'), 16)} queued"
            if isinstance(block, dict) and block.get("baseFeePerGas"):
                fee = _max_fee(missing[0].raw)
                text += f"; base fee {int(block['baseFeePerGas'], 16)} wei, these offer at most {fee} wei"
        except Exception:  # the description is best effort: the timeout is the error
            pass
        return text

    def _is_dev_node(self) -> bool:
        """Whether the node is anvil (which mines on demand); asked once."""
        if self._dev is None:
            try:
                self._dev = "anvil" in str(self.rpc.call("web3_clientVersion")).lower()
            except Exception:
                self._dev = False
        return self._dev

    def _tx_json(self, call: Call) -> dict[str, Any]:
        tx = {"from": self.address, "data": "0x" + call.data.hex(), "value": hex(call.value)}
        if call.to:
            tx["to"] = call.to
        return tx


def _already_known(e: RpcError) -> bool:
    m = e.message.lower()
    return "already known" in m or "already imported" in m or "known transaction" in m


def _nonce_too_low(e: RpcError) -> bool:
    m = e.message.lower()
    return "nonce too low" in m or "nonce is too low" in m


def _max_fee(raw: bytes) -> int:
    """maxFeePerGas of a signed type-2 transaction."""
    return int.from_bytes(rlp.decode(raw[1:])[3], "big")


__all__ = ["Call", "Log", "PendingTx", "Receipt", "Signer", "TxSender", "TxRpcError"]
