"""The loop behind `OGPUFunction` calls (functions.py): calls from any number of Prefect task runs
of this process coalesce into pipelined publications and ONE waiting loop per (network, source,
wallet, terms).

The loop is `streaming.Stream` itself, fed live: an engine is the Stream's input feed (calls
queued since its last refill, `NOTHING_YET` while none) and its results writer (each result wakes
its call). So publishing, the window, the budget, settling the escrow of what failed and the
delivery method with reputation are the streaming flows' own code, not a second money loop.

A call is identified by its Prefect task run: a retry of a call whose task is still on chain waits
for that task again (never a second publication); a retry of a call that failed publishes once
more, with the next attempt's mark, after the Stream settled the failed task's escrow. Calls of a
flow run that is cancelled (or crashed, or failed) are withdrawn: their tasks still NEW are
cancelled on chain and their escrow comes back. An engine idle for `IDLE_S` with nothing in flight
ends, and the next call starts a new one. The registry of engines is process-wide by nature (one
loop per wallet and source in the process), like the per-key wallet locks.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .batch import BatchRecord, Ledger
from .chain.errors import OGPUError
from .escrow import settle
from .models import TaskInput, TaskResult
from .streaming import NOTHING_YET, Limits, Stream

if TYPE_CHECKING:
    from .client import OGPUClient, SourceTerms
    from .delivery import DeliveryStrategy
    from .reputation import ReputationBook
    from .result_cache import ResultCache

log = logging.getLogger(__name__)

IDLE_S = 2.0
"""Seconds an engine with nothing queued or in flight waits for calls before it ends."""
LINGER_S = 0.3
LINGER_CALLS = 100
"""Calls queued are handed to the Stream once this many wait, or the oldest waited LINGER_S:
calls that a `.map` starts one by one go out in a few large publications, not many small ones
(each a round of blocks for the client and the providers)."""
WATCH_S = 2.0
"""Seconds between reads of the states of the flow runs whose calls are in flight."""
ENDED_FLOW_STATES = frozenset({"CANCELLING", "CANCELLED", "CRASHED", "FAILED"})


class CallFailedError(OGPUError):
    """An OGPUFunction call gave no result: `result` (a TaskResult) says why (expired, refused,
    cancelled). A Prefect retry of the call publishes it again."""

    def __init__(self, message: str, result: TaskResult) -> None:
        super().__init__(message)
        self.result = result


@dataclass(eq=False)
class Call:
    """One call (a task run) and what became of it."""

    id: str
    index: int
    item: TaskInput
    flow_run: str | None
    done: threading.Event = field(default_factory=threading.Event)
    result: TaskResult | None = None
    withdrawn: str | None = None  # why its flow run no longer wants it
    abandoned: bool = False  # its task run stopped waiting (a timeout): a result is still kept


class CallEngine:
    """One live Stream serving calls (see module doc)."""

    def __init__(
        self,
        client: OGPUClient,
        terms: SourceTerms,
        strategy: DeliveryStrategy,
        limits: Limits,
        *,
        book: ReputationBook | None = None,
        cache: ResultCache | None = None,
        on_close: Callable[[CallEngine], None] | None = None,
    ) -> None:
        self.client, self.cache, self.on_close = client, cache, on_close
        self.lock = threading.Lock()
        self.calls: dict[str, Call] = {}
        self.by_index: dict[int, Call] = {}
        self.queue: deque[tuple[int, TaskInput, int, list[str]]] = deque()
        self.closed: str | None = None
        self.manifest: dict[str, Any] = {}  # the Stream reads earlier runs' counts from its writer
        self._last = time.monotonic()
        self._oldest = 0.0  # when the oldest queued call was queued
        self._handing = False  # a publication is being filled from the queue
        key = f"ogpu-calls-{uuid.uuid4().hex[:16]}"  # the batch mark in every task's config
        chain = client.chain
        record = BatchRecord(key, chain.network.chain_id, client.address, terms.address, chain.block_number() + 1)
        self.ledger = Ledger(client, record)
        self.stream = Stream(client, terms, strategy, self, self.ledger, limits, key=key, book=book)  # type: ignore[arg-type]
        run, watch = _with_settings(self._run), _with_settings(self._watch)
        self.thread = threading.Thread(target=run, name=f"ogpu-calls-{terms.address[:10]}", daemon=True)
        self.watcher = threading.Thread(target=watch, name="ogpu-calls-watch", daemon=True)
        self.thread.start()
        self.watcher.start()

    # ---- the callers' side ----

    def submit(self, call_id: str, item: TaskInput, flow_run: str | None) -> Call | None:
        """The call `call_id` (a task run id), queued unless its task is still on chain or it
        already has a result; None when this engine has ended (take a new one)."""
        with self.lock:
            if self.closed is not None:
                return None
            call = self.calls.get(call_id)
            if call is not None and (not call.done.is_set() or (call.result is not None and call.result.ok)):
                call.abandoned = False
                return call  # a retry while its task is on chain (or answered): no second publication
            if call is None:
                call = Call(call_id, len(self.calls), item, flow_run)
                self.calls[call_id] = self.by_index[call.index] = call
                attempt, tasks = 0, []
            else:  # a retry of a failed call: its failed task was settled before the failure came back
                prev = call.result
                attempt, tasks = (prev.republished + 1, list(prev.tasks)) if prev is not None else (0, [])
                call.done.clear()
                call.result, call.withdrawn, call.abandoned = None, None, False
            if not self.queue:
                self._oldest = time.monotonic()
            self.queue.append((call.index, item, attempt, tasks))
            self._last = time.monotonic()
            return call

    def wait(self, call: Call, *, interruptible: bool = False) -> TaskResult:
        """Blocks until the call has its result. `interruptible` (a task run with a timeout):
        short waits, as Prefect's timeout is raised in the thread between two of them; otherwise
        long ones (a thousand waiting threads waking 4 times a second cost the GIL)."""
        step = 0.25 if interruptible else 5.0
        try:
            while not call.done.wait(step):
                pass
        except BaseException:
            call.abandoned = True  # its result, if paid, still goes to the cache
            raise
        assert call.result is not None
        return call.result

    # ---- the Stream's side: its feed and its results writer ----

    def __iter__(self) -> CallEngine:
        return self

    def __next__(self) -> tuple[int, TaskInput | None, int, list[str]] | tuple[int, None]:
        with self.lock:
            if self.queue:
                now = time.monotonic()
                if self._handing or len(self.queue) >= LINGER_CALLS or now - self._oldest >= LINGER_S:
                    self._last, self._handing = now, len(self.queue) > 1
                    return self.queue.popleft()
                return NOTHING_YET  # more calls are likely on their way: one publication for them all
            self._handing = False
            if self.stream.inflight or self.stream.retry or time.monotonic() - self._last < IDLE_S:
                return NOTHING_YET
            self.closed = "idle"
        raise StopIteration

    def add(self, r: TaskResult) -> None:
        call = self.by_index.get(r.index)
        if call is None:
            return
        if call.withdrawn is not None and not r.ok:
            r = r.model_copy(update={"status": "canceled", "reason": "canceled", "error": call.withdrawn})
        if r.ok and call.abandoned and self.cache is not None:
            self.cache.fill(call.item, r.result)
        call.result = r
        call.done.set()

    # ---- the loop ----

    def _run(self) -> None:
        error: str | None = None
        try:
            self.stream.run(self)
            if self.stream.stopped is not None:
                error = f"every call failed the same way: {self.stream.stopped}"
        except BaseException as e:  # the loop broke (the node, a publication): nothing stays open
            error = f"the calls' loop stopped: {type(e).__name__}: {e}"
            log.error("%s; settling the escrow of its %d open task(s)", error, len(self.ledger.tasks))
            try:
                self.ledger.settle()
            except Exception as settle_error:
                log.error("settling after the loop stopped failed: %s", settle_error)
        finally:
            self._close(error or "the calls' loop ended")

    def _close(self, why: str) -> None:
        with self.lock:
            self.closed = self.closed or why
            pending = [c for c in self.calls.values() if not c.done.is_set()]
            self.queue.clear()
        for c in pending:
            self.add(TaskResult(index=c.index, status="failed", reason="stopped", error=why))
        if self.on_close is not None:
            self.on_close(self)

    def _watch(self) -> None:
        """Withdraws the calls of flow runs that ended without them (cancelled, crashed, failed)."""
        while self.thread.is_alive():
            time.sleep(WATCH_S)
            with self.lock:
                runs = {c.flow_run for c in self.calls.values() if c.flow_run and not c.done.is_set()}
            if not runs:
                continue
            try:
                ended = _ended_flow_runs(runs)
            except Exception as e:  # the API is away: the calls wait, as they would anyway
                log.debug("could not read flow run states: %s", e)
                continue
            if ended:
                self.withdraw(ended)

    def withdraw(self, ended: dict[str, str]) -> None:
        """The calls of the flow runs `ended` (id -> state) end as cancelled: queued ones at once,
        published ones by cancelling their tasks on chain (what a provider took runs out)."""
        with self.lock:
            gone = [c for c in self.calls.values() if c.flow_run in ended and not c.done.is_set()]
            for c in gone:
                c.withdrawn = f"its flow run is {ended[c.flow_run or ''].lower()}"
            indexes = {c.index for c in gone}
            queued = [q for q in self.queue if q[0] in indexes]
            for q in queued:
                self.queue.remove(q)
            open_tasks = [t for t, e in list(self.stream.inflight.items()) if e.index in indexes]
        for q in queued:
            self.add(TaskResult(index=q[0], status="canceled", reason="canceled", tasks=list(q[3])))
        if open_tasks:
            log.warning("cancelling %d task(s) of ended flow run(s) %s", len(open_tasks), ", ".join(ended))
            report = settle(self.client, open_tasks)
            log.warning("withdrawn calls: %s", report.summary())


def _with_settings(target: Callable[[], None]) -> Callable[[], None]:
    """`target` under the caller's Prefect settings (its API, its result storage) but none of its
    run contexts: the loop outlives the task run that started it."""
    from prefect.context import SettingsContext

    current = SettingsContext.get()

    def run() -> None:
        if current is None:
            return target()
        with SettingsContext(profile=current.profile, settings=current.settings):
            return target()

    return run


def _ended_flow_runs(ids: set[str]) -> dict[str, str]:
    """Of these flow runs, those in an ended state: id -> the state's type."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=list(ids))))
    return {
        str(r.id): r.state.type.value for r in runs if r.state is not None and r.state.type.value in ENDED_FLOW_STATES
    }


class EngineRegistry:
    """The process's engines, one per (network, source, wallet, terms) key."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.engines: dict[Hashable, CallEngine] = {}

    def call(
        self, key: Hashable, build: Callable[[], CallEngine], call_id: str, item: TaskInput, flow_run: str | None
    ) -> tuple[CallEngine, Call]:
        """Queues a call on the engine of `key` (started by `build` when none runs)."""
        while True:
            with self.lock:
                engine = self.engines.get(key)
                if engine is None or engine.closed is not None:
                    engine = self.engines[key] = build()
                    engine.on_close = lambda e, k=key: self._drop(k, e)
            call = engine.submit(call_id, item, flow_run)
            if call is not None:
                return engine, call
            self._drop(key, engine)

    def _drop(self, key: Hashable, engine: CallEngine) -> None:
        with self.lock:
            if self.engines.get(key) is engine:
                del self.engines[key]

    def settle_all(self) -> None:
        """At interpreter exit: what the engines still have on chain is settled (cancelled if NEW)."""
        for engine in list(self.engines.values()):
            if engine.ledger.tasks:
                try:
                    settle(engine.client, engine.ledger.tasks)
                except Exception as e:
                    log.error("settling the calls' tasks at exit failed: %s", e)


ENGINES = EngineRegistry()
atexit.register(ENGINES.settle_all)

__all__ = ["ENGINES", "Call", "CallEngine", "CallFailedError", "EngineRegistry"]
