"""Protocol events for programs outside Prefect: `watch` (a blocking iterator) and `awatch` (an
async one) yield the Nexus's and the Terminal's events as typed values, in chain order, each with
its block number, transaction hash and log index.

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
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from .chain.connection import Chain
from .chain.errors import InvalidInputError, TxRpcError
from .chain.logs import EventCursor, EventLog
from .chain.types import Environment, ResponseStatus, SourceParams, SourceStatus, TaskStatus
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


NEXUS_EVENTS: dict[str, type[ProtocolEvent]] = {
    c.__name__: c
    for c in (
        SourcePublished,
        SourceUpdated,
        SourceStatusChanged,
        Registered,
        TaskPublished,
        Attempted,
        ResponseSubmitted,
        TaskStatusChanged,
        ResponseStatusChanged,
    )
}
TERMINAL_EVENTS: dict[str, type[ProtocolEvent]] = {
    c.__name__: c
    for c in (
        AgentSet,
        ProviderAnnounced,
        MasterAnnounced,
        ProviderRemoved,
        RemoveContainer,
        DefaultAgentDisabled,
        BaseDataUpdated,
        LiveDataUpdated,
    )
}
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
    """The polling step under `watch` and `awatch`: one cursor over the Nexus and (when asked for
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


def _checked(poll_interval: float) -> float:
    return float(check_number("poll_interval", poll_interval, exclusive_minimum=0, maximum=3600))


def watch(
    chain: Chain,
    events: Iterable[str] | None = None,
    *,
    from_block: int | None = None,
    poll_interval: float = 1.0,
    stop: Stop = None,
) -> Iterator[ProtocolEvent]:
    """Yields `events` (names; default: LIFECYCLE) from `from_block` (default: the blocks after the
    head at this call), in chain order, until `stop`. Polls every `poll_interval` seconds; an RPC outage is waited out
    (logged), never ends the iteration, and never makes an event come twice. Bad arguments raise
    InvalidInputError naming the field here, not at the first `next`."""
    return _watch(EventWatcher(chain, events, from_block), _checked(poll_interval), stop)


def _watch(watcher: EventWatcher, interval: float, stop: Stop) -> Iterator[ProtocolEvent]:
    backoff = interval
    while not _stopped(stop):
        try:
            batch = watcher.poll()
        except TxRpcError as e:
            log.warning("event watch: the RPC failed (%s); retrying in %.1fs", e, backoff)
            _sleep(backoff, stop)
            backoff = min(backoff * 2, MAX_BACKOFF_S)
            continue
        backoff = interval
        for event in batch:
            if _stopped(stop):
                return
            yield event
        _sleep(interval, stop)


def _sleep(seconds: float, stop: Stop) -> None:
    if isinstance(stop, threading.Event):
        stop.wait(seconds)
        return
    end = time.monotonic() + seconds
    while not _stopped(stop) and time.monotonic() < end:
        time.sleep(min(0.05, max(end - time.monotonic(), 0)))


def awatch(
    chain: Chain,
    events: Iterable[str] | None = None,
    *,
    from_block: int | None = None,
    poll_interval: float = 1.0,
    stop: Stop = None,
) -> AsyncIterator[ProtocolEvent]:
    """`watch` for asyncio (`async for event in awatch(chain)`): each poll runs in a worker thread,
    the event loop stays free. `stop` may be an `asyncio.Event`."""
    return _awatch(EventWatcher(chain, events, from_block), _checked(poll_interval), stop)


async def _awatch(watcher: EventWatcher, interval: float, stop: Stop) -> AsyncIterator[ProtocolEvent]:
    backoff = interval
    while not _stopped(stop):
        try:
            batch = await asyncio.to_thread(watcher.poll)
        except TxRpcError as e:
            log.warning("event watch: the RPC failed (%s); retrying in %.1fs", e, backoff)
            await _asleep(backoff, stop)
            backoff = min(backoff * 2, MAX_BACKOFF_S)
            continue
        backoff = interval
        for event in batch:
            if _stopped(stop):
                return
            yield event
        await _asleep(interval, stop)


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
