"""The loop behind `OGPUFunction` calls (functions.py): calls from any number of Prefect task runs
of this process coalesce into pipelined publications and ONE waiting loop per (network, source,
wallet, terms).

The loop is `streaming.Stream` itself, fed live, in a process of its own (call_loop.py says why
and what crosses): this side sends each call, waits for its result, signs what the loop asks to
be signed (the wallet's key stays here) and keeps a mirror of the tasks the loop has open, which
it settles itself should the loop's process die. So publishing, the window, the budget, settling
the escrow of what failed and the delivery method with reputation are the streaming flows' own
code, not a second money loop.

A call is identified by its Prefect task run: a retry of a call whose task is still on chain waits
for that task again (never a second publication); a retry of a call that failed publishes once
more, with the next attempt's mark, after the Stream settled the failed task's escrow. Calls of a
flow run that is cancelled (or crashed, or failed) are withdrawn: their tasks still NEW are
cancelled on chain and their escrow comes back. A loop idle for `call_loop.IDLE_S` ends, and the
next call starts a new one. The registry of engines is process-wide by nature (one loop per wallet
and source in the process), like the per-key wallet locks.
"""

from __future__ import annotations

import atexit
import logging
import os
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, TypeVar

from .call_loop import Channel, LoopSpec
from .chain.errors import OGPUError
from .escrow import settle
from .models import TaskInput, TaskResult

if TYPE_CHECKING:
    from .client import OGPUClient
    from .result_cache import ResultCache

log = logging.getLogger(__name__)
T = TypeVar("T")

WATCH_S = 2.0
"""Seconds between reads of the states of the flow runs whose calls are in flight."""
EXIT_WAIT_S = 60.0
"""Seconds this process waits at exit for a loop to settle what it has on chain."""
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
    abandoned: bool = False  # its task run stopped waiting (a timeout): a result is still kept


class CallEngine:
    """One live Stream, in its own process, serving calls (see module doc). `client` is this
    process's client of the same wallet: it signs for the loop and settles if the loop dies."""

    def __init__(
        self,
        spec: LoopSpec,
        client: OGPUClient,
        *,
        seal: bytes | None = None,
        cache: ResultCache | None = None,
        process: LoopProcess | None = None,
        on_close: Callable[[CallEngine], None] | None = None,
    ) -> None:
        self.client, self.cache, self.on_close, self.spec = client, cache, on_close, spec
        self.lock = threading.Lock()
        self.calls: dict[str, Call] = {}
        self.by_index: dict[int, Call] = {}
        self.open_tasks: dict[str, None] = {}  # the loop's ledger, as it reports it
        self.unclaimed: dict[tuple[str | None, str], deque[Call]] = {}  # sent ahead by `.map` (see precall)
        self.closed: str | None = None
        self.ended = threading.Event()
        if process is not None and not process.usable():
            process.stop()
            process = None
        self.loop = process or LoopProcess()
        self.process, self.channel = self.loop.process, self.loop.channel
        self.channel.send((spec, seal))
        self.reader = threading.Thread(target=self._read, name=f"ogpu-calls-{spec.terms.address[:10]}", daemon=True)
        self.watcher = threading.Thread(target=_with_settings(self._watch), name="ogpu-calls-watch", daemon=True)
        self.reader.start()
        self.watcher.start()

    # ---- the callers' side ----

    def precall(self, items: list[tuple[str, TaskInput]], flow_run: str | None) -> bool:
        """Sends `.map`'s inputs (match key, input) ahead of their task runs, which Prefect starts
        over seconds: the loop publishes them at once. Each task run then claims one (`submit`
        with its match key) as its call; one never claimed is paid into the cache."""
        with self.lock:
            if self.closed is not None:
                return False
            sent = []
            for match, item in items:
                call = Call(f"ahead-{len(self.calls)}", len(self.calls), item, flow_run, abandoned=True)
                self.calls[call.id] = self.by_index[call.index] = call
                self.unclaimed.setdefault((flow_run, match), deque()).append(call)
                sent.append((call.index, item, 0, [], flow_run))
            self.channel.send(("calls", sent))  # one message: queued together, published together
            return True

    def submit(self, call_id: str, item: TaskInput, flow_run: str | None, match: str | None = None) -> Call | None:
        """The call `call_id` (a task run id), sent to the loop unless its task is still on chain
        or it already has a result; None when this engine has ended (take a new one). `match`:
        the input's key, to claim a call `precall` sent ahead for it."""
        with self.lock:  # calls are sent under it: `idle` never closes the loop on one in the pipe
            if self.closed is not None:
                return None
            call = self.calls.get(call_id)
            ahead = self.unclaimed.get((flow_run, match)) if call is None and match is not None else None
            if ahead:
                call = ahead.popleft()
                del self.calls[call.id]
                call.id, call.abandoned = call_id, False
                self.calls[call_id] = call
                return call
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
                call.result, call.abandoned = None, False
            try:
                self.channel.send(("call", call.index, item, attempt, tasks, flow_run))
            except OSError as e:
                self.closed = f"the calls' loop is gone: {e}"
                call.result = TaskResult(index=call.index, status="failed", reason="stopped", error=self.closed)
                call.done.set()
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

    def withdraw(self, ended: dict[str, str]) -> None:
        """The calls of the flow runs `ended` (id -> state) end as cancelled (the loop cancels
        their tasks on chain)."""
        try:
            self.channel.send(("withdraw", ended))
        except OSError:
            pass  # the loop is gone: `_read` settles what it had

    # ---- the loop's side ----

    def _read(self) -> None:
        why: str | None = None
        try:
            while why is None:
                try:
                    message = self.channel.recv()
                except (EOFError, OSError):
                    break
                kind = message[0]
                if kind == "sign":
                    self._sign(message[1], message[2])
                elif kind == "result":
                    self._result(message[1])
                elif kind == "ledger":
                    self.open_tasks.update(dict.fromkeys(message[1]))
                    for t in message[2]:
                        self.open_tasks.pop(t, None)
                elif kind == "idle":
                    self._idle()
                elif kind == "closed":
                    why = str(message[1])
            if why is None and self.open_tasks:  # died: the key is here, so this side settles
                why = "the calls' loop process ended unexpectedly"
                log.error("%s; settling the escrow of its %d open task(s)", why, len(self.open_tasks))
                try:
                    log.warning("settled: %s", settle(self.client, list(self.open_tasks)).summary())
                except Exception as e:
                    log.error("settling after the loop died failed: %s", e)
        finally:
            self._close(why or "the calls' loop ended")

    def _sign(self, rid: int, txs: list[dict[str, Any]]) -> None:
        signer = self.client.sender.signer
        try:
            sign_many = getattr(signer, "sign_many", None)
            signed: Any = sign_many(txs) if sign_many is not None else [signer.sign(tx) for tx in txs]
        except Exception as e:  # no text of the signer's: it may hold the key
            signed = f"signing failed ({type(e).__name__})"
        self.channel.send(("signed", rid, signed))

    def _result(self, r: TaskResult) -> None:
        call = self.by_index.get(r.index)
        if call is None:
            return
        if r.ok and call.abandoned and self.cache is not None:
            self.cache.fill(call.item, r.result)
        call.result = r
        call.done.set()

    def _idle(self) -> None:
        with self.lock:
            if self.closed is None and all(c.done.is_set() for c in self.calls.values()):
                self.closed = "idle"
                self.channel.send(("close",))

    def _close(self, why: str) -> None:
        with self.lock:
            self.closed = self.closed or why
            pending = [c for c in self.calls.values() if not c.done.is_set()]
        for c in pending:
            self._result(TaskResult(index=c.index, status="failed", reason="stopped", error=why))
        self.channel.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.ended.set()
        if self.on_close is not None:
            self.on_close(self)

    def _watch(self) -> None:
        """Withdraws the calls of flow runs that ended without them (cancelled, crashed, failed)."""
        while not self.ended.wait(WATCH_S):
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

    def exit(self) -> None:
        """This process is exiting: the loop settles what it has on chain; if it cannot say so in
        time, this side settles the tasks it reported."""
        try:
            self.channel.send(("exit",))
        except OSError:
            pass
        if not self.ended.wait(EXIT_WAIT_S) and self.open_tasks:
            self.process.kill()
            settle(self.client, list(self.open_tasks))


class LoopProcess:
    """A call_loop process waiting for its spec. Started ahead (`EngineRegistry.warm`) where it
    can be: importing Prefect and the client takes it seconds, which a first call would wait."""

    def __init__(self) -> None:
        self.env = _prefect_env()
        to_loop_r, to_loop_w = os.pipe()
        from_loop_r, from_loop_w = os.pipe()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ogpu_prefect.call_loop", str(to_loop_r), str(from_loop_w)],
            pass_fds=(to_loop_r, from_loop_w),
            stdin=subprocess.DEVNULL,
            env={**os.environ, **self.env},
        )
        os.close(to_loop_r)
        os.close(from_loop_w)
        self.channel = Channel(Connection(from_loop_r, writable=False), Connection(to_loop_w, readable=False))

    def usable(self) -> bool:
        """Alive, and started with the Prefect settings of the caller now."""
        return self.process.poll() is None and self.env == _prefect_env()

    def stop(self) -> None:
        self.channel.close()  # it reads the end of its input and exits
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _prefect_env() -> dict[str, str]:
    """This context's Prefect settings as environment variables, for the loop's process."""
    from prefect.settings import get_current_settings

    from .prefect_api import api_url

    env = {k: str(v) for k, v in get_current_settings().to_environment_variables(exclude_unset=True).items()}
    url = api_url()
    if url:
        env["PREFECT_API_URL"] = url
    return env


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
        self.lock = threading.RLock()  # `build` runs under it, and takes the spare
        self.engines: dict[Hashable, CallEngine] = {}
        self.spare: LoopProcess | None = None

    def warm(self, key: Hashable) -> None:
        """A loop process started ahead for `key` when none serves it (see LoopProcess)."""
        with self.lock:
            engine = self.engines.get(key)
            if (engine is None or engine.closed is not None) and (self.spare is None or not self.spare.usable()):
                if self.spare is not None:
                    self.spare.stop()
                self.spare = LoopProcess()

    def take_spare(self) -> LoopProcess | None:
        with self.lock:
            spare, self.spare = self.spare, None
            return spare

    def call(
        self,
        key: Hashable,
        build: Callable[[], CallEngine],
        call_id: str,
        item: TaskInput,
        flow_run: str | None,
        match: str | None = None,
    ) -> tuple[CallEngine, Call]:
        """Queues a call on the engine of `key` (started by `build` when none runs)."""
        return self._on_engine(key, build, lambda e: e.submit(call_id, item, flow_run, match))

    def precall(
        self, key: Hashable, build: Callable[[], CallEngine], items: list[tuple[str, TaskInput]], flow_run: str | None
    ) -> None:
        """Sends `.map`'s inputs ahead to the engine of `key` (see CallEngine.precall)."""
        self._on_engine(key, build, lambda e: True if e.precall(items, flow_run) else None)

    def _on_engine(
        self, key: Hashable, build: Callable[[], CallEngine], use: Callable[[CallEngine], T | None]
    ) -> tuple[CallEngine, T]:
        """`use(engine)` on the live engine of `key`; on a new one when that one has just ended."""
        while True:
            with self.lock:
                engine = self.engines.get(key)
                if engine is None or engine.closed is not None:
                    engine = self.engines[key] = build()
                    engine.on_close = lambda e, k=key: self._drop(k, e)
            out = use(engine)
            if out is not None:
                return engine, out
            self._drop(key, engine)

    def _drop(self, key: Hashable, engine: CallEngine) -> None:
        with self.lock:
            if self.engines.get(key) is engine:
                del self.engines[key]

    def settle_all(self) -> None:
        """At interpreter exit: what the engines still have on chain is settled (cancelled if NEW)."""
        spare = self.take_spare()
        if spare is not None:
            spare.stop()
        for engine in list(self.engines.values()):
            try:
                engine.exit()
            except Exception as e:
                log.error("settling the calls' tasks at exit failed: %s", e)


ENGINES = EngineRegistry()
atexit.register(ENGINES.settle_all)

__all__ = ["ENGINES", "Call", "CallEngine", "CallFailedError", "EngineRegistry", "LoopProcess"]
