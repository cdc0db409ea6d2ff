"""Protocol events: decoded from receipts, or read over block ranges with one `EventCursor`.

Every lifecycle event comes from the Nexus with no indexed field, so filtering is by emitter and
topic0 at the node and by field values in Python. The client's waiting loop, the provider worker's
chain watcher and the tests all read events through `EventCursor` (made by `Chain.cursor`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from .abi import checksum_address, events_by_topic, spec

if TYPE_CHECKING:
    from .rpc import Rpc

LOG_CHUNK = 10_000
"""Blocks per eth_getLogs request (public nodes cap the range)."""


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
            checksum_address(lg["address"]),
            [bytes.fromhex(t[2:]) for t in lg["topics"]],
            bytes.fromhex(lg["data"][2:]),
            int(lg["blockNumber"], 16),
            lg["transactionHash"],
            int(lg["logIndex"], 16),
        )


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
        args = event.decode(lg.topics, lg.data)
        out.append(EventLog(event.name, lg.address, args, lg.block_number, lg.tx_hash, lg.log_index))
    return out


def topic(contract: str, event: str) -> str:
    return "0x" + spec(contract).events[event].topic0.hex()


class EventCursor:
    """Events named `names` emitted at `address` (one contract, or several: the Nexus and the
    Terminal), read forward from `from_block`: each `poll` returns what was emitted since the last
    one (eth_getLogs in chunks of LOG_CHUNK blocks), so the cost of a poll follows new blocks, not
    the chain's length. A poll that fails leaves the cursor where it was: the next one reads the
    same blocks again, so nothing is skipped and nothing is returned twice.

    `contract` names the contract(s) whose ABI defines `names` (the first that has each name)."""

    def __init__(
        self,
        rpc: Rpc,
        address: str | Sequence[str],
        names: Iterable[str],
        from_block: int,
        contract: str | Sequence[str] = "Nexus",
    ) -> None:
        self.rpc = rpc
        self.address: str | list[str] = address if isinstance(address, str) else list(address)
        self.names = tuple(names)
        self.next_block = max(from_block, 0)
        self.head: int | None = None  # the latest block the last poll read up to
        contracts = [contract] if isinstance(contract, str) else list(contract)
        self.topics = [topic(next(c for c in contracts if n in spec(c).events), n) for n in self.names]

    def poll(self, to_block: int | None = None) -> list[EventLog]:
        """Events in [next_block, to_block] (default: the head); the cursor moves past them."""
        head = int(self.rpc.call("eth_blockNumber"), 16) if to_block is None else to_block
        logs: list[Log] = []
        start = self.next_block
        while start <= head:
            end = min(start + LOG_CHUNK - 1, head)
            query = {"address": self.address, "topics": [self.topics], "fromBlock": hex(start), "toBlock": hex(end)}
            logs += [Log.from_rpc(lg) for lg in self.rpc.call("eth_getLogs", [query])]
            start = end + 1
        self.next_block = start  # only once every chunk was read
        self.head = head
        return decode_logs(logs, self.names)


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
