"""Build, sign and send transactions explicitly.

`TxSender` owns one account's nonces on one chain. It can pipeline many signed transactions before
waiting for any receipt, then collect receipts in bulk (JSON-RPC batches). A transient RPC failure
re-sends the *same signed bytes*, so a logical transaction is never sent twice: if the node already
has it ("already known", "nonce too low"), the hash is looked up instead.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from .abi import checksum_address
from .errors import (
    NonceConflictError,
    RpcError,
    TxReceiptTimeoutError,
    TxRevertError,
    already_known,
    as_revert,
    nonce_too_low,
    replacement_underpriced,
    revert_error,
)
from .logs import Log
from .mining import mines_on_demand
from .nonces import NonceCounter, wallet_lock
from .pool import describe_unmined, is_anvil, requeue_stuck
from .rpc import Rpc
from .signing import TxSigner

log = logging.getLogger(__name__)

RECEIPT_BATCH = 200
RESIGN_ROUNDS = 8
"""Times a batch is signed again at fresh nonces while other senders of the key keep taking them."""


@dataclass(frozen=True)
class Call:
    """An unsigned contract call: where (empty for a contract creation), what, how much coin, and
    a name for error messages."""

    to: str
    data: bytes
    value: int = 0
    context: str = ""


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
            r["transactionHash"],
            int(r["status"], 16),
            int(r["blockNumber"], 16),
            int(r["gasUsed"], 16),
            logs,
            context,
            checksum_address(ca) if ca else None,
        )


SUPERSEDED = -1  # a Receipt status: lost its nonce, and what it would do is on chain (resign)


@dataclass
class PendingTx:
    """A signed transaction of ours. When its nonce is lost to another sender of the key it is
    signed again at a fresh nonce, in place: `tx_hash` is always the one to wait for."""

    call: Call
    nonce: int
    tx_hash: str
    raw: bytes = field(repr=False)
    gas: int = 0
    accepted: bool = False
    """Whether a node ever took it into its pool (then it may still be mined, until its nonce is used)."""
    replaced: list[str] = field(default_factory=list)
    """Hashes it had before being signed again."""
    superseded: bool = False
    """Lost its nonce, and what it would do is on chain already: not signed again (see SUPERSEDED)."""


Superseded = Callable[[list[PendingTx]], list[PendingTx]]  # of those that lost their nonce: not to re-sign


class TxSender:
    """Sends one account's transactions on one chain. Thread-safe, and safe beside other senders
    of the same key in this process, in other processes and on other machines: nonces are taken
    under the key's lock (nonces.py), and a transaction whose nonce another sender used is signed
    again at a fresh nonce only once its old bytes can never be mined (they were refused, or the
    nonce was used by a mined transaction that is not ours), so each call lands once."""

    def __init__(
        self,
        rpc: Rpc,
        signer: TxSigner,
        chain_id: int,
        *,
        gas_margin: float = 1.25,
        receipt_timeout: float = 120.0,
        poll_interval: float = 0.005,
    ) -> None:
        self.rpc, self.signer, self.chain_id = rpc, signer, chain_id
        self.gas_margin, self.receipt_timeout, self.poll_interval = gas_margin, receipt_timeout, poll_interval
        # Asked before transactions that lost their nonce are signed again (see resign).
        self.superseded: Superseded | None = None
        self._wallet = wallet_lock(chain_id, signer.address, rpc.url)
        self._nonces = NonceCounter(
            self._wallet, lambda: int(self.rpc.call("eth_getTransactionCount", [self.address, "pending"]), 16)
        )
        self._dev: bool | None = None
        self._automine = True

    @property
    def address(self) -> str:
        return self.signer.address

    def __repr__(self) -> str:
        return f"TxSender({self.address} on {self.rpc.label})"

    # ---- nonces and fees ----

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Holds the key's lock: sign and broadcast inside it, so that no other sender of this key
        on this machine takes the same nonces. Taking it re-reads the node's pending count."""
        with self._wallet.held(self, on_take=self._nonces.forget):
            yield

    def _next_nonces(self, n: int) -> list[int]:
        with self.exclusive():
            return self._nonces.take(n)

    def resync_nonce(self) -> None:
        """Forget the local nonce (signed transactions were never sent; see NonceCounter.resync)."""
        self._nonces.resync()

    def _fees(self, total_gas: int) -> dict[str, int]:
        """Fees for a batch using `total_gas`. EIP-1559 where blocks carry a base fee: a pipelined
        batch fills blocks, and each full block raises the base fee by 12.5%, so the fee cap covers
        the blocks the batch needs (plus two), or its last transactions would sit underpriced; only
        the base fee is paid. On a chain without a base fee: legacy transactions at its gas price."""
        block, tip = self.rpc.batch([("eth_getBlockByNumber", ["latest", False]), ("eth_maxPriorityFeePerGas", [])])
        if isinstance(block, dict) and not block.get("baseFeePerGas"):
            return {"gasPrice": int(self.rpc.call("eth_gasPrice"), 16)}
        tip = int(tip, 16) if isinstance(tip, str) else 1_000_000_000
        if isinstance(block, dict):
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
            if isinstance(r, Exception):
                raise as_revert(r, call.context) or r
            gas.append(int(int(r, 16) * self.gas_margin) + 10_000)
        return gas

    def sign(self, calls: Sequence[Call], gas: Sequence[int] | int | None = None) -> list[PendingTx]:
        """Signs calls with consecutive nonces. `gas`: per call, one limit for all, or None to
        estimate (which raises the typed revert of a call that cannot succeed). For the
        guarantee against other senders of the key, broadcast inside `exclusive()` (`send` does)."""
        if gas is None:
            limits = self.estimate(calls)
        elif isinstance(gas, int):
            limits = [gas] * len(calls)
        else:
            limits = list(gas)
        fees = self._fees(sum(limits))
        nonces = self._next_nonces(len(calls))
        return self._signed(list(zip(calls, nonces, limits)), fees)

    def _signed(self, todo: Sequence[tuple[Call, int, int]], fees: dict[str, int]) -> list[PendingTx]:
        """(call, nonce, gas) -> signed, in one `sign_many` where the signer has it (a signer in
        another process answers a whole publication in one exchange)."""
        txs = [self._tx(call, nonce, gas, fees) for call, nonce, gas in todo]
        sign_many = getattr(self.signer, "sign_many", None)
        signed = sign_many(txs) if sign_many is not None else [self.signer.sign(tx) for tx in txs]
        return [PendingTx(call, nonce, "0x" + h.hex(), raw, gas) for (call, nonce, gas), (raw, h) in zip(todo, signed)]

    def _tx(self, call: Call, nonce: int, gas: int, fees: dict[str, int]) -> dict[str, Any]:
        tx: dict[str, Any] = {
            "chainId": self.chain_id,
            "nonce": nonce,
            "data": call.data,
            "value": call.value,
            "gas": gas,
            **fees,
        }
        if "gasPrice" not in fees:
            tx["type"] = 2
        if call.to:  # no `to`: a contract creation
            tx["to"] = call.to
        return tx

    def broadcast(self, pending: Sequence[PendingTx]) -> None:
        """Sends signed transactions in JSON-RPC batches. Safe to call again with the same ones.
        Those whose nonce another sender of the key took are signed again and sent (see resign)."""
        for _ in range(RESIGN_ROUNDS):
            lost = self._send_raw(pending)
            pending = self.resign(lost) if lost else []
            if not pending:
                return
        raise NonceConflictError(
            f"{len(pending)} transaction(s) of {self.address} kept losing their nonces to "
            f"other senders of the key ({RESIGN_ROUNDS} rounds)"
        )

    def _send_raw(self, pending: Sequence[PendingTx]) -> list[PendingTx]:
        """One send of the same bytes; returns those whose nonce is provably lost to another
        transaction while their old bytes can never be mined."""
        results = self.rpc.batch([("eth_sendRawTransaction", ["0x" + p.raw.hex()]) for p in pending])
        refused, unclear = [], []
        for p, r in zip(pending, results):
            if not isinstance(r, Exception) or (isinstance(r, RpcError) and already_known(r)):
                p.accepted = True  # the node has it (maybe from an earlier, retried send)
            elif isinstance(r, RpcError) and nonce_too_low(r):
                unclear.append(p)  # used: by this very transaction (fine) or by another one
            elif isinstance(r, RpcError) and replacement_underpriced(r):
                refused.append(p)  # another transaction holds the nonce in the pool
            else:
                self.resync_nonce()
                raise r
        known = self.rpc.batch([("eth_getTransactionByHash", [p.tx_hash]) for p in unclear]) if unclear else []
        lost = [p for p, tx in zip(unclear, known) if tx is None and not isinstance(tx, Exception)]
        # A refused one that a node took before (then another sender's replaced it) may still be
        # held elsewhere: it is signed again only once its nonce is mined (wait's check).
        return lost + [p for p in refused if not p.accepted]

    def resign(self, lost: Sequence[PendingTx]) -> list[PendingTx]:
        """Signs `lost` again, in place, at fresh nonces (their old nonces were used by another
        sender of the key, or their old bytes were refused), except those `superseded` names:
        they are marked and left. Returns the ones signed again."""
        if self.superseded is not None:
            for p in self.superseded(list(lost)):
                p.superseded = True
            lost = [p for p in lost if not p.superseded]
            if not lost:
                return []
        log.warning(
            "%d transaction(s) of %s lost their nonce to another sender of the key: signing them again",
            len(lost),
            self.address,
        )
        with self.exclusive():
            fees = self._fees(sum(p.gas for p in lost))
            fresh_txs = self._signed([(p.call, n, p.gas) for p, n in zip(lost, self._next_nonces(len(lost)))], fees)
            for p, fresh in zip(lost, fresh_txs):
                p.replaced.append(p.tx_hash)
                p.nonce, p.tx_hash, p.raw, p.accepted = fresh.nonce, fresh.tx_hash, fresh.raw, False
        return list(lost)

    def send(self, calls: Sequence[Call], gas: Sequence[int] | int | None = None) -> list[PendingTx]:
        """Signs and broadcasts without waiting: the pipelined path."""
        if gas is None:
            gas = self.estimate(calls)
        with self.exclusive():
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
            for p in pending:
                if p.superseded and p.tx_hash not in receipts:
                    receipts[p.tx_hash] = Receipt(p.tx_hash, SUPERSEDED, 0, 0, [], p.call.context)
            missing = [p for p in pending if p.tx_hash not in receipts]
            if not missing:
                break
            # One call tells which nonces are used on chain; only those transactions can have a
            # receipt. Asking every missing receipt on every poll cost ~13 receipt calls a
            # transaction, each counted by a metered endpoint.
            used = self._mined_count()
            self._collect_receipts([p for p in missing if p.nonce < used], receipts)
            missing = [p for p in pending if p.tx_hash not in receipts]
            if not missing:
                break
            now = time.monotonic()
            if now > deadline:
                raise TxReceiptTimeoutError(describe_unmined(self.rpc, self.address, missing, self.receipt_timeout))
            if len(receipts) > seen:
                seen, stalled_since = len(receipts), now
            elif now - stalled_since > 1.0:
                suspects = self._recover_replaced(missing, receipts, suspects)
                if self._dev is None:
                    self._dev, self._automine = is_anvil(self.rpc), mines_on_demand(self.rpc)
                if self._dev:
                    # anvil's automine mines when a transaction arrives; what did not fit in
                    # that block waits for the next arrival. Mine one instead of waiting forever
                    # (with a block time, the next block comes anyway).
                    if self._automine:
                        self.rpc.call("evm_mine")
                    if requeue_stuck(self.rpc, self.address, [p for p in pending if p.tx_hash not in receipts]):
                        self.broadcast(sorted(missing, key=lambda p: p.nonce))
                stalled_since = now
            if now > rebroadcast_at:  # a node may have dropped them: same bytes, same hashes
                # Only what the node's pool lacks (its pending count stops at the first gap): on a
                # chain with a backlog, resending every waiting transaction was a call each.
                in_pool = int(self.rpc.call("eth_getTransactionCount", [self.address, "pending"]), 16)
                self.broadcast([p for p in pending if p.tx_hash not in receipts and p.nonce >= in_pool])
                rebroadcast_at = now + 5.0
            time.sleep(delay)
            delay = min(delay * 1.5, self._max_poll_s())
        out = [receipts[p.tx_hash] for p in pending]
        if check:
            failed = [r for r in out if r.status not in (1, SUPERSEDED)]
            if failed:
                raise self.explain(failed[0])
        return out

    def _mined_count(self) -> int:
        """How many nonces of this account mined transactions have used ("latest")."""
        return int(self.rpc.call("eth_getTransactionCount", [self.address, "latest"]), 16)

    def _max_poll_s(self) -> float:
        """The longest pause between receipt polls: 50 ms where a block follows each transaction
        (anvil's automine), 250 ms on a chain with block times, where polling faster only spends
        calls (a block a second: a quarter of a block's latency at most)."""
        if self._dev is None:
            self._dev, self._automine = is_anvil(self.rpc), mines_on_demand(self.rpc)
        return 0.05 if self._automine and self._dev else 0.25

    def _collect_receipts(self, pending: Sequence[PendingTx], receipts: dict[str, Receipt]) -> None:
        """Adds the receipts the node has for `pending` to `receipts`, a JSON-RPC batch at a time
        (each decoded before the next is fetched: 10,000 raw receipts at once are ~100 MB)."""
        for start in range(0, len(pending), RECEIPT_BATCH):
            part = pending[start : start + RECEIPT_BATCH]
            results = self.rpc.batch([("eth_getTransactionReceipt", [p.tx_hash]) for p in part])
            for p, r in zip(part, results):
                if isinstance(r, dict):
                    receipts[p.tx_hash] = Receipt.from_rpc(r, p.call.context)

    def _recover_replaced(
        self, missing: Sequence[PendingTx], receipts: dict[str, Receipt], suspects: set[str]
    ) -> set[str]:
        """Signs again, at fresh nonces, the transactions that can never be mined: their nonce was
        used by a mined transaction that is not ours (another sender of the key, here or on
        another machine, or a replacement in the pool). A node can count a nonce a moment before
        it serves the receipt, so one is judged lost only when two checks a stall apart agree;
        returns this check's suspects."""
        used = self._mined_count()
        stale = [p for p in missing if p.nonce < used]
        if not stale:
            return set()
        self._collect_receipts(stale, receipts)
        lost = [p for p in stale if p.tx_hash not in receipts]
        confirmed = [p for p in lost if p.tx_hash in suspects]
        if confirmed:
            resent = self.resign(confirmed)
            if resent:
                self.broadcast(resent)
        return {p.tx_hash for p in lost if p not in confirmed}

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

    def _tx_json(self, call: Call) -> dict[str, Any]:
        tx = {"from": self.address, "data": "0x" + call.data.hex(), "value": hex(call.value)}
        if call.to:
            tx["to"] = call.to
        return tx


__all__ = ["Call", "PendingTx", "Receipt", "TxSender"]
