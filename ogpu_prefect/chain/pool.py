"""What a node's pool says about transactions of ours that are not mined: a description for a
receipt timeout, and the recovery of anvil's stuck queue."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import rlp

from .errors import RpcError
from .rpc import Rpc

log = logging.getLogger(__name__)


def is_anvil(rpc: Rpc) -> bool:
    """Whether the node is anvil (which mines on demand)."""
    try:
        return "anvil" in str(rpc.call("web3_clientVersion")).lower()
    except Exception:
        return False


def requeue_stuck(rpc: Rpc, address: str, missing: Sequence[Any]) -> bool:
    """anvil only. Its pool decides at insertion whether a transaction waits for its
    predecessor, from the nonce it read before inserting; when the block that mined the
    predecessor lands in between, the transaction at the account's next nonce waits for it
    forever, *queued* with everything after it (seen under pipelined load: 0 pending, 43 queued
    from the next nonce; with other accounts sending, their pending ones hide it from the
    pool-wide counts, so the account's own entries are read then). `anvil_dropTransaction` only
    drops ready ones and a resend of the same bytes is refused as already imported, so: remove
    this account's transactions from the pool; True tells the caller to send ours again, in
    nonce order (same hashes, nothing sent twice). A concurrent batch of the same account is
    removed too; its own wait sends it again at its next rebroadcast (within 5 s)."""
    if not missing:
        return False
    head = min(missing, key=lambda p: p.nonce)
    mined, pool = rpc.batch([("eth_getTransactionCount", [address, "latest"]), ("txpool_status", [])])
    if not (isinstance(mined, str) and isinstance(pool, dict)) or int(mined, 16) != head.nonce:
        return False
    if int(pool.get("queued", "0x0"), 16) > 0 and (
        int(pool.get("pending", "0x0"), 16) == 0 or _only_queued(rpc.call("txpool_inspect"), address)
    ):
        log.warning(
            "%d transaction(s) of %s stuck in anvil's queue from nonce %d: sending them again",
            len(missing),
            address,
            head.nonce,
        )
        try:
            rpc.call("anvil_removePoolTransactions", [address])
        except RpcError as e:  # an anvil without it: the rebroadcast is all we have
            log.warning("anvil_removePoolTransactions failed: %s", e)
            return False
        return True
    return False


def queued_of(rpc: Rpc, address: str) -> int:
    """How many of the account's transactions the node's pool holds as *queued* (behind a nonce
    gap, or anvil's stuck queue), which the "pending" nonce count does not show; 0 where the node
    does not tell (`txpool_inspect` refused)."""
    try:
        inspect = rpc.call("txpool_inspect")
    except Exception:
        return 0
    return _entries(inspect, "queued", address)


def drop_queued(rpc: Rpc, address: str) -> bool:
    """anvil only: removes the account's transactions from the pool, so that those queued can
    never be mined (a dead sender's, which a gap or the stuck queue holds back)."""
    if not is_anvil(rpc):
        return False
    try:
        rpc.call("anvil_removePoolTransactions", [address])
    except RpcError:
        return False
    return True


def _only_queued(inspect: Any, address: str) -> bool:
    """Whether the pool holds this account's transactions as queued only: stuck while other
    accounts' are pending (the pool-wide counts see only an idle pool)."""
    return _entries(inspect, "queued", address) > 0 and _entries(inspect, "pending", address) == 0


def _entries(inspect: Any, section: str, address: str) -> int:
    """How many of the account's transactions a `txpool_inspect` answer lists under `section`."""
    accounts = inspect.get(section) if isinstance(inspect, dict) else None
    return sum(len(txs or {}) for a, txs in (accounts or {}).items() if a.lower() == address.lower())


def describe_unmined(rpc: Rpc, address: str, missing: Sequence[Any], timeout: float) -> str:
    """Why transactions may not be mined, from what the node says: nonce gap, fee, pool."""
    nonces = sorted(p.nonce for p in missing)
    text = f"{len(missing)} transaction(s) not mined in {timeout:.0f}s (nonces {nonces[0]}-{nonces[-1]})"
    try:
        mined, pool, block = rpc.batch(
            [
                ("eth_getTransactionCount", [address, "latest"]),
                ("txpool_status", []),
                ("eth_getBlockByNumber", ["latest", False]),
            ]
        )
        if isinstance(mined, str):
            text += f"; the node's next nonce for {address} is {int(mined, 16)}"
        if isinstance(pool, dict):
            pending, queued = int(pool.get("pending", "0x0"), 16), int(pool.get("queued", "0x0"), 16)
            text += f"; its pool: {pending} pending, {queued} queued"
        if isinstance(block, dict) and block.get("baseFeePerGas"):
            fee = _max_fee(missing[0].raw)
            text += f"; base fee {int(block['baseFeePerGas'], 16)} wei, these offer at most {fee} wei"
    except Exception:  # the description is best effort: the timeout is the error
        pass
    return text


def _max_fee(raw: bytes) -> int:
    """The most a signed transaction pays per gas: maxFeePerGas (type 2) or gasPrice (legacy)."""
    if raw[0] == 2:
        return int.from_bytes(rlp.decode(raw[1:])[3], "big")
    return int.from_bytes(rlp.decode(raw)[1], "big")
