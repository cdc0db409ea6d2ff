"""Protocol events for programs outside Prefect: `watch` yields the Nexus's and the Terminal's
events as typed values, in chain order, each with its block number, transaction hash and log index,
to a `for` loop (blocking) or an `async for` loop (each poll in a worker thread).

Both read through one `EventCursor` (one `eth_getLogs` per poll, whatever the number of event
kinds): an RPC outage is waited out, first by the RPC layer's own retries (`Rpc.outage_s`), then
here, with backoff, for as long as it lasts; a failed poll reads the same blocks again, so no event
is missed and none is yielded twice.

Example:

    chain = Chain(network)
    for event in watch(chain, ["TaskPublished", "TaskStatusChanged"], poll_interval=2.0):
        if isinstance(event, TaskStatusChanged) and event.status is TaskStatus.FINALIZED:
            print(event.task, "finalized in block", event.block_number)
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from .chain.abi import spec
from .chain.connection import Chain
from .chain.errors import InvalidInputError, TxRpcError
from .chain.logs import EventCursor, EventLog
from .chain.pacing import RetryPolicy
from .chain.structs import SourceParams
from .chain.types import Environment, ResponseStatus, SourceStatus, TaskStatus
from .validation import check_int, check_number

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 30.0
Stop = threading.Event | asyncio.Event | Callable[[], bool] | None
"""What ends a watch: an Event that is set, or a callable that returns True (checked between
polls and between events)."""


@dataclass(frozen=True, kw_only=True)
class ProtocolEvent:
    """One decoded event: where it happened, and (in subclasses) its fields."""

    block_number: int
    tx_hash: str
    log_index: int
    emitter: str
    """The contract that emitted it (the Nexus or the Terminal)."""

    @property
    def name(self) -> str:
        return type(self).__name__


event = dataclass(frozen=True, kw_only=True)
"""Every protocol event is a frozen, keyword-only dataclass; the bases below hold shared fields."""


@event
class _SourceEvent(ProtocolEvent):
    source: str


@event
class _TaskEvent(ProtocolEvent):
    task: str


@event
class _ResponseEvent(ProtocolEvent):
    response: str


@event
class _ProviderEvent(ProtocolEvent):
    provider: str


@event
class _PairingEvent(_ProviderEvent):
    master: str


class SourcePublished(_SourceEvent):
    pass


@event
class SourceUpdated(_SourceEvent):
    source_params: SourceParams


@event
class SourceStatusChanged(_SourceEvent):
    status: SourceStatus


@event
class Registered(_ProviderEvent):
    registrant_id: int
    source: str
    preferred_environment: Environment


@event
class TaskPublished(_TaskEvent):
    source: str


@event
class Attempted(_TaskEvent):
    provider: str
    suggested_payment: int


@event
class ResponseSubmitted(_ResponseEvent):
    task: str


@event
class TaskStatusChanged(_TaskEvent):
    status: TaskStatus


@event
class ResponseStatusChanged(_ResponseEvent):
    status: ResponseStatus


@event
class AgentSet(ProtocolEvent):
    account: str
    agent: str
    value: bool


class ProviderAnnounced(_PairingEvent):
    """A master named `provider` as its provider (the first half of pairing)."""


class MasterAnnounced(_PairingEvent):
    """`provider` accepted `master` (the pairing is complete)."""


class ProviderRemoved(_ProviderEvent):
    pass


@event
class RemoveContainer(_ProviderEvent):
    source: str


@event
class DefaultAgentDisabled(ProtocolEvent):
    master: str
    """The provider that opted out (the real ABI names it `master`)."""
    value: bool


class BaseDataUpdated(_ProviderEvent):
    pass


class LiveDataUpdated(_ProviderEvent):
    pass


_DEFINED = {
    name: cls
    for name, cls in list(globals().items())
    if isinstance(cls, type)
    and issubclass(cls, ProtocolEvent)
    and not name.startswith("_")
    and cls is not ProtocolEvent
}
NEXUS_EVENTS: dict[str, type[ProtocolEvent]] = {n: c for n, c in _DEFINED.items() if n in spec("Nexus").events}
TERMINAL_EVENTS: dict[str, type[ProtocolEvent]] = {n: c for n, c in _DEFINED.items() if n in spec("Terminal").events}
LIFECYCLE = ("TaskPublished", "Attempted", "ResponseSubmitted", "TaskStatusChanged", "ResponseStatusChanged")
"""The default: a task's way from publication to its end."""
_CASTS: dict[str, Callable[[Any], Any]] = {
    "TaskStatusChanged.status": TaskStatus,
    "ResponseStatusChanged.status": ResponseStatus,
    "SourceStatusChanged.status": SourceStatus,
    "Registered.preferredEnvironment": Environment,
}


def _snake(name: str) -> str:
    return "".join(f"_{ch.lower()}" if ch.isupper() else ch for ch in name)


def typed(e: EventLog) -> ProtocolEvent:
    """An `EventLog` of a known event -> its typed value."""
    cls = NEXUS_EVENTS.get(e.name) or TERMINAL_EVENTS[e.name]
    fields = {_snake(k): _CASTS.get(f"{e.name}.{k}", _same)(v) for k, v in e.args.items()}
    return cls(block_number=e.block_number, tx_hash=e.tx_hash, log_index=e.log_index, emitter=e.address, **fields)


def _same(value: Any) -> Any:
    return value


class EventWatcher:
    """The polling step under `watch`: one cursor over the Nexus and (when asked for
    its events) the Terminal. `from_block` None: from the block after the head now (or, if the
    node cannot be reached now, at the first poll that reaches it)."""

    def __init__(self, chain: Chain, events: Iterable[str] | None = None, from_block: int | None = None) -> None:
        names = list(LIFECYCLE if events is None else _names(events))
        self.chain = chain
        self.names = names
        self.from_block = check_int("from_block", from_block, minimum=0, optional=True)
        if self.from_block is None:
            try:
                self.from_block = chain.block_number() + 1
            except TxRpcError:
                pass  # an outage now: the first poll that reaches the node decides
        self.cursor: EventCursor | None = None
        self.last: tuple[int, int] = (-1, -1)

    def poll(self) -> list[ProtocolEvent]:
        """The events since the last poll, in chain order (an RPC failure raises; nothing moves)."""
        if self.cursor is None:
            start = self.from_block if self.from_block is not None else self.chain.block_number() + 1
            addresses = [self.chain.network.nexus]
            if any(n in TERMINAL_EVENTS for n in self.names):
                addresses.append(self.chain.network.terminal)
            self.cursor = EventCursor(self.chain.rpc, addresses, self.names, start, contract=("Nexus", "Terminal"))
        out = []
        for e in self.cursor.poll():
            where = (e.block_number, e.log_index)
            if where > self.last:  # a node behind a load balancer may answer an older range
                self.last = where
                out.append(typed(e))
        return out


def _names(events: Iterable[str]) -> list[str]:
    if isinstance(events, str):
        raise InvalidInputError("events", "expected a list of event names, not one string")
    names = list(events)
    known = {**NEXUS_EVENTS, **TERMINAL_EVENTS}
    for i, n in enumerate(names):
        if n not in known:
            raise InvalidInputError(f"events[{i}]", f"{n!r} is not a protocol event; known: {', '.join(known)}")
    if not names:
        raise InvalidInputError("events", "name at least one event")
    return names


def _stopped(stop: Stop) -> bool:
    if stop is None:
        return False
    if isinstance(stop, (threading.Event, asyncio.Event)):
        return stop.is_set()
    return bool(stop())


def watch(
    chain: Chain,
    events: Iterable[str] | None = None,
    *,
    from_block: int | None = None,
    poll_interval: float = 1.0,
    stop: Stop = None,
) -> EventStream:
    """Yields `events` (names; default: LIFECYCLE) from `from_block` (default: the blocks after the
    head at this call), in chain order, until `stop`: `for event in watch(...)` blocks between
    polls, `async for event in watch(...)` runs each poll in a worker thread (`stop` may then be an
    `asyncio.Event`). Polls every `poll_interval` seconds; an RPC outage is waited out (logged),
    never ends the iteration, and never makes an event come twice. Bad arguments raise
    InvalidInputError naming the field here, not at the first event."""
    interval = float(check_number("poll_interval", poll_interval, exclusive_minimum=0, maximum=3600))
    return EventStream(EventWatcher(chain, events, from_block), interval, stop)


class EventStream:
    """What `watch` returns: an iterator and an async iterator over one `EventWatcher`."""

    def __init__(self, watcher: EventWatcher, interval: float, stop: Stop) -> None:
        self.watcher = watcher
        self.interval = interval
        self.stop = stop
        # an outage is waited out for as long as it lasts (the RPC's own retries gave up first)
        self._retry = RetryPolicy(outage_s=math.inf, backoff=interval, max_backoff=MAX_BACKOFF_S).start()
        self._sync: Iterator[ProtocolEvent] | None = None
        self._async: AsyncIterator[ProtocolEvent] | None = None

    def _poll(self) -> tuple[list[ProtocolEvent], float]:
        """One poll: its events and how long to wait before the next (backing off while the RPC fails)."""
        try:
            batch = self.watcher.poll()
        except TxRpcError as e:
            wait = self._retry.failed() or MAX_BACKOFF_S  # never None: no outage limit
            log.warning("event watch: the RPC failed (%s); retrying in %.1fs", e, wait)
            return [], wait
        self._retry.answered()
        return batch, self.interval

    def __iter__(self) -> Iterator[ProtocolEvent]:
        if self._sync is None:
            self._refuse_both(self._async)
            self._sync = self._events()
        return self._sync

    def __next__(self) -> ProtocolEvent:
        return next(iter(self))

    def __aiter__(self) -> AsyncIterator[ProtocolEvent]:
        if self._async is None:
            self._refuse_both(self._sync)
            self._async = self._aevents()
        return self._async

    @staticmethod
    def _refuse_both(other: object) -> None:
        if other is not None:  # the other loop may hold a polled batch: its events would be lost
            raise TypeError("read a watch with `for` or with `async for`, not both")

    async def __anext__(self) -> ProtocolEvent:
        return await self.__aiter__().__anext__()

    def _events(self) -> Iterator[ProtocolEvent]:
        while not _stopped(self.stop):
            batch, wait = self._poll()
            for event in batch:
                if _stopped(self.stop):
                    return
                yield event
            _sleep(wait, self.stop)

    async def _aevents(self) -> AsyncIterator[ProtocolEvent]:
        while not _stopped(self.stop):
            batch, wait = await asyncio.to_thread(self._poll)
            for event in batch:
                if _stopped(self.stop):
                    return
                yield event
            await _asleep(wait, self.stop)


def _sleep(seconds: float, stop: Stop) -> None:
    if isinstance(stop, threading.Event):
        stop.wait(seconds)
        return
    end = time.monotonic() + seconds
    while not _stopped(stop) and time.monotonic() < end:
        time.sleep(min(0.05, max(end - time.monotonic(), 0)))


async def _asleep(seconds: float, stop: Stop) -> None:
    if isinstance(stop, asyncio.Event):
        try:
            await asyncio.wait_for(stop.wait(), seconds)
        except TimeoutError:
            pass
        return
    end = time.monotonic() + seconds
    while not _stopped(stop) and time.monotonic() < end:
        await asyncio.sleep(min(0.05, max(end - time.monotonic(), 0)))
