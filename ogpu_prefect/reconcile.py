"""Finding what a client already published, from the chain alone (the real network's ABI only).

A batch's task configs carry marks (batch key, input index, round), and configs are stored
content-addressed, so the same (batch, input, round) always has the same config URL. A retry or a
re-run lists this client's `TaskPublished` events on the source since the batch's first block
(`EventCursor`: the cost follows the batch's age, not the chain's), keeps those whose publishing
transaction the client sent, and reads each one's config URL (`Task.taskParams`).
"""

from __future__ import annotations

from dataclasses import dataclass

from .chain.connection import Chain
from .chain.errors import TxRpcError


@dataclass(frozen=True)
class OnChainTask:
    address: str
    config_url: str
    payment: int
    expiry_time: int
    tx_hash: str
    block_number: int


def find_published(chain: Chain, client: str, source: str, from_block: int) -> dict[str, list[OnChainTask]]:
    """config URL -> the tasks `client` published on `source` since `from_block` with that config
    (oldest first; more than one is a duplicate, to be cancelled)."""
    events = [e for e in chain.cursor(["TaskPublished"], from_block).poll() if e["source"].lower() == source.lower()]
    if not events:
        return {}
    hashes = sorted({e.tx_hash for e in events})
    senders = {}
    for h, tx in zip(hashes, chain.rpc.batch([("eth_getTransactionByHash", [h]) for h in hashes])):
        if isinstance(tx, Exception):
            raise tx if isinstance(tx, TxRpcError) else TxRpcError(str(tx))
        senders[h] = (tx or {}).get("from", "").lower()
    ours = [e for e in events if senders.get(e.tx_hash) == client.lower()]
    params = chain.read_many([chain.task(e["task"]).read.task_params() for e in ours])
    found: dict[str, list[OnChainTask]] = {}
    for e, (_, config, expiry, payment) in zip(ours, params):
        found.setdefault(config, []).append(OnChainTask(e["task"], config, payment, expiry, e.tx_hash, e.block_number))
    return found
