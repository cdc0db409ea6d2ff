"""The provider's tasks as Prefect task runs carrying the chain's times (`records: tasks`), or as
one summary per service session (`records: summary`).

Prefect's API sets a flow run's state time when a request reaches it, so a flow run per task
shows when our writes arrived, not when the task ran. A task run is recorded from the events its
client sends (`prefect.task-run.<State>`, Prefect's task run recorder), with the event's own time
as the state's time. So each OpenGPU task is a task run whose Running state is its attempt (the
attempt's block time) and whose final state is its response (the response's block time), or the
moment it failed or was cancelled, inside one flow run of the provider's deployment per source
service session (the compose service is the job, as a container is for prefect-docker). One
session run, one or two events (a task that ends within `RUNNING_AFTER_S` gets only its final
state, with its start time) and one coalesced log record per task, one artifact per session (a table
of its tasks): a fraction of a flow run per task's writes, and the times are the chain's.

A block's timestamp has a 1 s resolution (and blocks of one second share it); the time we saw the
receipt is finer but later. A state's time is the receipt's time clamped into the block's second
(at most 0.9 s past it), and an end is at least 1 ms after its start: Prefect's recorder keeps a
state only if it is newer than the run's last, so an end stamped like its start left the run
Running.

The session flow runs themselves (Running, final state, artifact, logs) are written by a
`FlowRunJournal`; this module adds the task runs. Nothing here is on the money path: `start`,
`log`, `end` only record; `flush` writes.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import anyio

from .journal import FlowRunJournal
from .task_run_events import iso, task_run_event

ROWS_PER_ARTIFACT = 200
"""A long session's table is written in parts of this many tasks (one artifact each)."""
RECORDS = ("tasks", "summary", "flow_runs")
RUNNING_AFTER_S = 5.0
"""A task still running this long after its attempt was seen is recorded Running; one that ends
sooner gets its final state only, which carries its start time (the UI shows the same start and
duration), an event fewer for the many short tasks of a burst."""


@dataclass
class _Task:
    task: str
    source: str
    session: str  # the session entry's key in the FlowRunJournal
    id: UUID  # the task run's id: derived from the task's key, so a restart updates the same one
    parameters: dict[str, str]
    seen_start: float  # when we saw the attempt mined (wall clock)
    start_block: int | None
    start_at: float | None = None
    start_sent: bool = False
    end: tuple[str, str] | None = None
    seen_end: float = 0.0
    end_block: int | None = None
    end_at: float | None = None
    end_mined: float | None = None  # the response's time read from the chain when its block is not known
    end_asked: bool = False  # end_mined was asked for
    result: dict[str, str] = field(default_factory=dict)
    lines: list[tuple[int, str, float]] = field(default_factory=list)


@dataclass
class _Session:
    key: str
    source: str
    tasks: set[str] = field(default_factory=set)  # in flight
    rows: list[str] = field(default_factory=list)  # ended tasks not yet in an artifact
    counts: dict[str, int] = field(default_factory=dict)
    closing: bool = False  # its service stopped (or the worker is stopping): closes once idle
    cancelled: bool = False  # its flow run was cancelled from Prefect: closes Cancelled once idle
    single: bool = False  # a flow run started from Prefect for one task: closes with that task
    summary_lines: list[str] = field(default_factory=list)


class TaskRunJournal:
    """Records tasks as task runs of session flow runs (see module doc). Same calls as
    `FlowRunJournal`: `start`, `log` (any thread), `end` from the event loop; `run` flushes until
    `stop`; plus `service_stopped` (any thread) and `finish` (the worker stops)."""

    def __init__(
        self,
        sessions: FlowRunJournal,
        send: Callable[[Any], None],
        block_times: Callable[[list[int]], dict[int, float]],
        *,
        summary_only: bool = False,
        tags: list[str] | None = None,
        send_log: Callable[[dict[str, Any]], None] | None = None,
        response_times: Callable[[list[str]], dict[str, float]] | None = None,
        running_after: float = RUNNING_AFTER_S,
    ) -> None:
        self.sessions = sessions
        self.running_after = running_after
        self.send = send  # queues a Prefect event (the events sender: retried, never dropped)
        self.block_times = block_times  # block numbers -> timestamps (a thread calls it)
        self.response_times = response_times  # Response addresses -> their responseTimestamp (a thread)
        self.summary_only = summary_only
        self.send_log = send_log  # queues a log line for POST /logs/ (retried, never dropped); None: Prefect's handler
        self.tags = tags or []
        self.log_ = sessions.log_
        self._tasks: dict[str, _Task] = {}
        self._sessions: dict[str, _Session] = {}
        self._live: dict[str, str] = {}  # source -> its open session's key
        self._times: dict[int, float] = {}
        self._lock = threading.Lock()
        self._stopped: set[str] = set()  # sources whose service stopped (set from any thread)
        self._late: dict[str, tuple[UUID, str]] = {}  # ended task -> (task run, session): trailing output

    # ---- recording (never blocks) ----

    def start(
        self,
        task: str,
        parameters: dict[str, str],
        key: str,
        *,
        resumed: bool = False,
        run_id: UUID | None = None,
        note: str = "resumed after a worker restart",
        infrastructure: str = "",
        block: int | None = None,
    ) -> None:
        """A task began executing: its attempt was mined in `block` (None: not known, e.g. resumed
        after a restart; the time we learned it is used). `run_id`: a flow run of the deployment
        started from Prefect for this task, which records it alone."""
        known = self._tasks.get(task)
        if known is not None and known.end is None:
            if run_id is not None:  # a second run for a task executing (started from the UI)
                self.sessions._closing.append((run_id, f"task {task} is executing in flow run {self.run_of(task)}"))
            return
        source = parameters.get("source") or (known.source if known else "")
        if run_id is not None:
            skey = f"run:{run_id}"
            self._sessions[skey] = _Session(skey, source, single=True)
            self.sessions.start(skey, parameters, "", run_id=run_id, note=note)
        else:
            skey = self._session_of(source, key)
        self._sessions[skey].tasks.add(task)
        self._tasks[task] = _Task(
            task,
            source,
            skey,
            uuid.uuid5(uuid.NAMESPACE_URL, f"ogpu-task-run:{key or task}"),
            parameters,
            time.time(),
            block,
        )
        if resumed:
            self._tasks[task].lines.append((logging.INFO, note, time.time()))

    def _session_of(self, source: str, key: str) -> str:
        skey = self._live.get(source.lower())
        if skey is not None and not self._sessions[skey].closing:
            return skey
        started = time.time()
        skey = f"session:{source.lower()}:{started:.6f}"
        self._sessions[skey] = _Session(skey, source)
        self._live[source.lower()] = skey
        prefix = key.rsplit(":", 2)[0] if key.count(":") >= 3 else "ogpu"  # chain:provider
        stamp = datetime.fromtimestamp(started, UTC).strftime("%Y%m%d-%H%M%S")
        self.sessions.start(
            skey,
            {"source": source},
            f"{prefix}:session:{source.lower()}:{started:.6f}",
            name=f"session-{source[2:10].lower()}-{stamp}",
        )
        return skey

    def log(self, task: str, level: int, message: str) -> None:
        """Held with the task and written as one record when it ends (a task's lines coalesced).
        Any thread."""
        with self._lock:
            t = self._tasks.get(task)
            if t is not None:
                t.lines.append((level, message, time.time()))
                return
            late = self._late.get(task)
        if late is not None and not self.summary_only:
            self._write_lines(late[1], late[0], [(level, message, time.time())])
        else:
            self.log_.log(level, "%s: %s", task, message)

    def end(
        self,
        task: str,
        state_type: str,
        message: str,
        artifact: str | None = None,
        *,
        block: int | None = None,
        result: dict[str, str] | None = None,
    ) -> None:
        """The task ended (`block`: the response's block, if it was mined). Its row goes to its
        session's table (`result`); `artifact` (a per-task document) is not written."""
        t = self._tasks.get(task)
        if t is not None and t.end is None:
            t.end, t.seen_end, t.end_block, t.result = (state_type, message), time.time(), block, result or {}

    def service_stopped(self, source: str) -> None:
        """The source's service stopped: its session closes once its tasks are recorded. Any thread."""
        with self._lock:
            self._stopped.add(source.lower())

    def cancelled(self, run_id: UUID) -> None:
        """Flow run `run_id`'s session was cancelled from Prefect: it closes Cancelled once idle."""
        for s in self._sessions.values():
            if self.sessions.run_of(s.key) == run_id:
                s.closing = s.cancelled = True
                if self._live.get(s.source.lower()) == s.key:
                    del self._live[s.source.lower()]

    def finish(self) -> None:
        """The worker stops: every session closes once its tasks are recorded."""
        for s in self._sessions.values():
            s.closing = True

    async def close_runs(self, ids: list[UUID], state_type: str, message: str) -> None:
        await self.sessions.close_runs(ids, state_type, message)

    def run_of(self, task: str) -> UUID | None:
        """The flow run recording `task` (its session's), once it exists; a task recorded as
        ended a moment ago still has it (an event about it may follow its end)."""
        t = self._tasks.get(task)
        session = t.session if t is not None else self._late.get(task, (None, None))[1]
        return self.sessions.run_of(session) if session is not None else None

    def run_related(self, run_id: UUID) -> list[dict[str, str]]:
        return self.sessions.run_related(run_id)

    def task_run_of(self, task: str) -> UUID | None:
        t = self._tasks.get(task)
        run = t.id if t is not None else self._late.get(task, (None, None))[0]
        return run if not self.summary_only else None

    def open_runs(self) -> dict[UUID, list[str]]:
        """Session flow run -> its tasks in flight (cancelling the run cancels them)."""
        out: dict[UUID, list[str]] = {}
        for s in self._sessions.values():
            run_id = self.sessions.run_of(s.key)
            if run_id is not None and s.tasks:
                out[run_id] = sorted(s.tasks)
        return out

    def pending(self) -> int:
        return len(self._tasks) + sum(1 for s in self._sessions.values() if s.closing) + self.sessions.pending()

    # ---- flushing ----

    async def run(self, stop: anyio.Event, interval: float = 0.25) -> None:
        while not stop.is_set():
            try:
                await self.flush()
            except Exception as e:  # what is not written is kept and retried
                self.log_.warning("recording task runs failed (%s); retrying", e)
                await anyio.sleep(1.0)
            with anyio.move_on_after(max(interval, 0.5)):
                await stop.wait()

    async def flush(self) -> bool:
        with self._lock:
            stopped, self._stopped = self._stopped, set()
        for source in stopped:
            skey = self._live.pop(source, None)
            if skey is not None:
                self._sessions[skey].closing = True
        await self._resolve_times()
        await self.sessions.flush()  # session runs exist before their task runs point at them
        now = time.time()
        for t in list(self._tasks.values()):
            run_id = self.sessions.run_of(t.session)
            if run_id is None:
                continue
            ended = t.end is not None and t.end_at is not None
            if not t.start_sent and t.start_at is not None:
                # A task that ended by now gets its final state only (one event fewer): its start
                # time is in that event's task run, so the UI's start and duration are the same.
                if ended or self.summary_only:
                    t.start_sent = True
                elif now - t.seen_start >= self.running_after:
                    self._send_state(t, run_id, "RUNNING", "attempt mined", t.start_at)
                    t.start_sent = True
            if ended and t.start_sent:
                self._ended(t, run_id)
        for s in list(self._sessions.values()):
            await self._close_session(s)
        return await self.sessions.flush()

    async def _resolve_times(self) -> None:
        want = {b for t in self._tasks.values() for b in (t.start_block, t.end_block) if b and b not in self._times}
        if want:
            try:
                self._times.update(await anyio.to_thread.run_sync(self.block_times, sorted(want)))
            except Exception as e:  # the RPC hiccuped: the next flush asks again
                self.log_.debug("block times not read: %s", e)
                return
            while len(self._times) > 4096:
                self._times.pop(next(iter(self._times)))
        # A response found landed after a failed send (or already on chain) has no block here:
        # its Response contract keeps its time.
        unknown = [
            t
            for t in self._tasks.values()
            if t.end is not None and t.end_at is None and t.end_block is None and t.result.get("response")
        ]
        unknown = [t for t in unknown if not t.end_asked] if self.response_times is not None else []
        if unknown and self.response_times is not None:
            try:
                found = await anyio.to_thread.run_sync(self.response_times, [t.result["response"] for t in unknown])
            except Exception as e:  # the next flush asks again
                self.log_.debug("response times not read: %s", e)
                return
            for t in unknown:
                t.end_mined, t.end_asked = found.get(t.result["response"]), True
        for t in self._tasks.values():
            if t.start_at is None:
                t.start_at = self._at(t.start_block, t.seen_start)
            waiting = self.response_times is not None and t.end_block is None and t.result.get("response")
            if t.end is not None and t.end_at is None and t.start_at is not None and not (waiting and not t.end_asked):
                # None while its block's time is unknown: a task that ended while the times were
                # being read waits for the next flush (it fell back to when it was seen, 1 s late).
                end = self._at(t.end_block, t.seen_end, t.end_mined)
                if end is not None:  # later than the start: the recorder keeps only a newer state
                    t.end_at = max(end, t.start_at + 0.001)

    def _at(self, block: int | None, seen: float, mined: float | None = None) -> float | None:
        """The block's time (or `mined`), refined by when we saw it (within the block's second);
        `seen` when neither is known; None while the block's time is unknown."""
        if block is None and mined is None:
            return seen
        mined = self._times.get(block) if block is not None else mined
        if mined is None:
            return None
        return min(max(seen, mined), mined + 0.9)

    def _send_state(self, t: _Task, run_id: UUID, state_type: str, message: str, at: float) -> None:
        """The task run's state `state_type` at `at`, as Prefect's task engine sends it."""
        self.send(
            task_run_event(
                t.task, t.source, t.id, t.start_at, self.tags, run_id, state_type, state_type.capitalize(), message, at
            )
        )

    def _ended(self, t: _Task, run_id: UUID) -> None:
        assert t.end is not None and t.end_at is not None and t.start_at is not None
        state_type, message = t.end
        s = self._sessions[t.session]
        if not self.summary_only:
            self._send_state(t, run_id, state_type, message, t.end_at)
            with self._lock:
                lines, t.lines = t.lines, []
            self._write_lines(t.session, t.id, lines)
        else:
            with self._lock:
                lines, t.lines = t.lines, []
            s.summary_lines += [f"{t.task[:10]} {m}" for _, m, _ in lines if _ >= logging.WARNING]
        s.counts[state_type] = s.counts.get(state_type, 0) + 1
        duration = t.end_at - t.start_at
        r = t.result
        s.rows.append(
            f"| `{t.task}` | {iso(t.start_at)} | {iso(t.end_at)} | {duration:.2f} | {state_type.capitalize()} "
            f"| {r.get('response', '')} | {r.get('result_url', '')} | {r.get('payment', '')} |"
        )
        s.tasks.discard(t.task)
        del self._tasks[t.task]
        self._late[t.task] = (t.id, t.session)
        while len(self._late) > 256:
            self._late.pop(next(iter(self._late)))

    def _write_lines(self, skey: str, task_run: UUID, lines: list[tuple[int, str, float]]) -> None:
        """A task's lines as one log record of its task run, at the first line's time."""
        if not lines:
            return
        stamp = (lambda w: datetime.fromtimestamp(w, UTC).strftime("%H:%M:%S.%f")[:-3]) if len(lines) > 1 else None
        text = "\n".join(f"{stamp(w)} {m}" if stamp else m for _, m, w in lines)
        level = max(level for level, _, _ in lines)
        run_id = self.sessions.run_of(skey)
        if self.send_log is not None and run_id is not None:
            self.send_log(
                {
                    "name": "prefect.flow_runs.worker",
                    "level": level,
                    "message": text,
                    "timestamp": datetime.fromtimestamp(lines[0][2], UTC).isoformat(),
                    "flow_run_id": str(run_id),
                    "task_run_id": str(task_run),
                }
            )
            return
        adapter = self.sessions.logger_of(skey)
        if adapter is None:
            for level, message, _ in lines:
                self.log_.log(level, "%s", message)
            return
        tagged = logging.LoggerAdapter(adapter.logger, {**(adapter.extra or {}), "task_run_id": str(task_run)})
        from .journal import _log_at

        _log_at(tagged, level, text, lines[0][2])

    async def _close_session(self, s: _Session) -> None:
        """Writes a session's table when long, and closes an idle closing session."""
        run_id = self.sessions.run_of(s.key)
        if run_id is None:
            return
        done = (s.closing or s.single) and not s.tasks
        if len(s.rows) >= ROWS_PER_ARTIFACT or (done and s.rows):
            rows, s.rows = s.rows[:ROWS_PER_ARTIFACT], s.rows[ROWS_PER_ARTIFACT:]
            await self._artifact(run_id, s, rows)
            if s.rows:
                return
        if not done:
            return
        if s.summary_lines:
            adapter = self.sessions.logger_of(s.key)
            if adapter is not None:
                adapter.warning("%s", "\n".join(s.summary_lines))
        counts = ", ".join(f"{n} {k.lower()}" for k, n in sorted(s.counts.items())) or "no task"
        state = "COMPLETED" if not s.single else next(iter(s.counts), "COMPLETED")
        message = f"{counts}" if not s.single else f"task {counts}"
        if s.cancelled:
            state, message = "CANCELLED", f"cancelled from Prefect: {counts}"
        self.sessions.end(s.key, state, message)
        del self._sessions[s.key]
        if self._live.get(s.source.lower()) == s.key:
            del self._live[s.source.lower()]

    async def _artifact(self, run_id: UUID, s: _Session, rows: list[str]) -> None:
        from prefect.client.schemas.actions import ArtifactCreate

        header = (
            f"### OpenGPU tasks of source `{s.source}`\n\nStart: the attempt's block; end: the response's "
            "block (or when it failed or was cancelled).\n\n"
            "| task | start (UTC) | end (UTC) | duration (s) | state | response | result | payment (wei) |\n"
            "|---|---|---|---|---|---|---|---|\n"
        )
        await self.sessions.client.create_artifact(
            ArtifactCreate(type="markdown", data=header + "\n".join(rows), flow_run_id=run_id, description="Tasks")
        )
