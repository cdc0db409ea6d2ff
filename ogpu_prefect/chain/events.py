"""Protocol events, decoded from receipts or from block ranges. Every lifecycle event comes from
the Nexus with no indexed field, so filtering is by emitter and topic0, matching in Python."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any, Iterable, Iterator

from .abi import events_by_topic, spec
from .rpc import Rpc
from .tx import Log


@dataclass(frozen=True)
class EventLog:
    name: str
    address: str
    args: dict[str, Any]
    block_number: int
    tx_hash: str
    log_index: int

    def __getitem__(self, key: str) -> Any:
        return self.args[key]


def decode_logs(logs: Iterable[Log], names: Iterable[str] | None = None) -> list[EventLog]:
    """Logs -> the protocol events among them (unknown topics are skipped), optionally by name."""
    wanted = set(names) if names is not None else None
    table = events_by_topic()
    out = []
    for lg in logs:
        if not lg.topics:
            continue
        event = table.get(lg.topics[0])
        if event is None or (wanted is not None and event.name not in wanted):
            continue
        out.append(EventLog(event.name, lg.address, event.decode(lg.topics, lg.data), lg.block_number, lg.tx_hash,
                            lg.log_index))
    return out


def topic(contract: str, event: str) -> str:
    return "0x" + spec(contract).events[event].topic0.hex()


def iter_logs(
    rpc: Rpc,
    address: str | list[str],
    topics0: list[str],
    from_block: int,
    to_block: int,
    *,
    chunk: int = 10_000,
) -> Iterator[Log]:
    """eth_getLogs over [from_block, to_block] in chunks, any of `topics0`."""
    start = from_block
    while start <= to_block:
        end = min(start + chunk - 1, to_block)
        raw = rpc.call(
            "eth_getLogs",
            [{"address": address, "topics": [topics0], "fromBlock": hex(start), "toBlock": hex(end)}],
        )
        for lg in raw:
            yield Log.from_rpc(lg)
        start = end + 1


def get_events(
    rpc: Rpc, address: str, contract: str, names: Iterable[str], from_block: int, to_block: int | None = None
) -> list[EventLog]:
    """Decoded events of `contract` (emitted at `address`) named `names`, over a block range."""
    names = list(names)
    if to_block is None:
        to_block = int(rpc.call("eth_blockNumber"), 16)
    topics0 = [topic(contract, n) for n in names]
    return decode_logs(iter_logs(rpc, address, topics0, from_block, to_block), names)


def created_address(receipt: Any, event: str, field: str, emitter: str | None = None) -> str:
    """The address a transaction created, read from its receipt's event (`SourcePublished.source`,
    `TaskPublished.task`, `ResponseSubmitted.response`). Only logs from `emitter` count, if given."""
    wanted = _topic0(event)
    for lg in receipt.logs:  # only the matching log is decoded: a batch has thousands of receipts
        if lg.topics and lg.topics[0] == wanted and (emitter is None or lg.address.lower() == emitter.lower()):
            return str(decode_logs([lg])[0].args[field])
    raise LookupError(f"no {event} event in transaction {receipt.tx_hash}")


@cache
def _topic0(event: str) -> bytes:
    """topic0 of the protocol event named `event` (as decode_logs resolves it)."""
    return next(t for t, e in events_by_topic().items() if e.name == event)
