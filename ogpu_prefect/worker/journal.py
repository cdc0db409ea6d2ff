"""The provider's tasks as Prefect flow runs (`records: flow_runs`), and the session flow runs
of `records: tasks` / `summary` (task_records.py), recorded off the critical path.

A task is executed the moment its attempt is mined; its flow run is a record of that execution,
written by this journal: each flow run is created Running (a few at once), with the provider and
task as its infrastructure id; one bulk request per outcome closes those that ended; then each
Completed run gets its result artifact, and service output reaches the run's logs, each line with
the time it was written even when the run was created after it. Prefect sets a state's time when
it receives it, so a run's Running and final times are those of these requests: on a server that
keeps up (PostgreSQL + Redis) they are the attempt's and the response's within a second. A slow
server (SQLite under load) makes the records lag (BENCHMARKS.md); it never delays a response on
chain.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import anyio

CREATE_CHUNK = 50  # creations between two state flushes
CREATE_AT_ONCE = 8  # creations in flight together
BULK_STATE = 50  # the server's limit per bulk_set_state


@dataclass
class _Entry:
    task: str
    parameters: dict[str, str]
    key: str
    resumed: bool
    note: str = ""  # the Running message of a resumed run
    run_id: UUID | None = None
    running_set: bool = False
    end: tuple[str, str] | None = None  # (state type, message)
    end_set: bool = False
    artifact: str | None = None
    lines: list[tuple[int, str, float]] = field(default_factory=list)  # (level, message, when)
    logger: logging.LoggerAdapter[Any] | None = None
    infrastructure: str = ""  # "provider:task", what kill_infrastructure takes
    name: str = ""  # the run's name (default: from the task)


class FlowRunJournal:
    """Records tasks as flow runs of `deployment_id`. Call `start`, `log`, `end` from the event
    loop (or `log` from any thread); `run` flushes until `stop` is set (the worker's teardown
    then flushes what is left)."""

    def __init__(
        self,
        client: Any,
        deployment_id: UUID,
        flow_id: UUID,
        pool_name: str,
        queue_name: str,
        tags: list[str],
        make_logger: Callable[[Any], logging.LoggerAdapter[Any]],
        log: logging.Logger | Any,
    ) -> None:
        self.client = client
        self.deployment_id = deployment_id
        self.flow_id = flow_id
        self.queue_name = queue_name
        self.pool_name = pool_name
        self.tags = tags
        self.make_logger = make_logger
        self.log_ = log
        self._entries: dict[str, _Entry] = {}
        self._wake = anyio.Event()
        self._lines_lock = threading.Lock()
        self._late: dict[str, logging.LoggerAdapter[Any] | None] = {}
        self._bulk = True  # False once the server turns out to lack bulk_set_state (Prefect < 3.9)
        self._closing: list[tuple[UUID, str]] = []  # runs to cancel: (id, message)

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
        name: str = "",
    ) -> None:
        """A task began executing. `resumed`: its flow run may exist already (found by `key`);
        `run_id`: it does. Either way that run is set Running with `note`. `infrastructure` is
        set as the run's infrastructure id (`provider:task`)."""
        entry = self._entries.get(task)
        if entry is not None and entry.end is not None:
            # An earlier execution of this address ended (a task of a reverted chain): its
            # record is still written, under a key of its own.
            self._entries[f"{task}#{id(entry)}"] = self._entries.pop(task)
            entry = None
        if entry is None:
            entry = self._entries[task] = _Entry(
                task, parameters, key, resumed, note, infrastructure=infrastructure, name=name
            )
        if run_id is not None and entry.run_id not in (None, run_id):
            # A second run for a task already recorded (started from the UI while it executes).
            self._closing.append((run_id, f"task {task} is executing in flow run {entry.run_id}"))
        elif run_id is not None:
            entry.run_id, entry.resumed, entry.note = run_id, True, note
            self._attach(entry)
        self._wake.set()

    def log(self, task: str, level: int, message: str) -> None:
        """To the task's flow-run log (held until its flow run exists). Any thread."""
        with self._lines_lock:
            entry = self._entries.get(task)
            logger = entry.logger if entry is not None else self._late.get(task)
            if entry is not None and logger is None:
                entry.lines.append((level, message, time.time()))
                return
        if logger is not None:
            logger.log(level, "%s", message)
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
        """The task ended; its run gets `artifact`. (`block`, `result`: what a `TaskRunJournal`
        records; a flow run's times are those of the writes.)"""
        entry = self._entries.get(task)
        if entry is not None:
            entry.end, entry.artifact = (state_type, message), artifact
            self._wake.set()

    async def close_runs(self, ids: list[UUID], state_type: str, message: str) -> None:
        """Sets existing flow runs that no task of ours executes to a final state, now."""
        for i in range(0, len(ids), BULK_STATE):
            await self._force_state(ids[i : i + BULK_STATE], state_type, message)

    def run_of(self, task: str) -> UUID | None:
        """The flow run recording `task`, once it exists."""
        entry = self._entries.get(task)
        return entry.run_id if entry is not None else None

    def run_related(self, run_id: UUID) -> list[dict[str, str]]:
        """One of this journal's flow runs, with its deployment and flow, as an event's related
        resources (as Prefect links a flow run's own events)."""
        return [
            {"prefect.resource.id": f"prefect.flow-run.{run_id}", "prefect.resource.role": "flow-run"},
            {"prefect.resource.id": f"prefect.deployment.{self.deployment_id}", "prefect.resource.role": "deployment"},
            {"prefect.resource.id": f"prefect.flow.{self.flow_id}", "prefect.resource.role": "flow"},
        ]

    def open_runs(self) -> dict[UUID, list[str]]:
        """Flow run -> its task, for recorded tasks that have not ended."""
        return {e.run_id: [t] for t, e in self._entries.items() if e.run_id is not None and e.end is None}

    def logger_of(self, task: str) -> logging.LoggerAdapter[Any] | None:
        """The run's logger, once the run exists."""
        entry = self._entries.get(task)
        return entry.logger if entry is not None else self._late.get(task)

    def task_run_of(self, task: str) -> UUID | None:
        return None  # a flow run per task: no task run

    def service_stopped(self, source: str) -> None:
        """Nothing to do: a run per task closes with its task."""

    def finish(self) -> None:
        """Nothing to do: each run closes with its task."""

    def cancelled(self, run_id: UUID) -> None:
        """Nothing to do: the cancelled task's end closes its run."""

    def pending(self) -> int:
        return len(self._entries) + len(self._closing)

    # ---- flushing ----

    async def run(self, stop: anyio.Event, interval: float = 0.25) -> None:
        behind = False
        while not stop.is_set():
            if not behind:  # with artifacts still to write, no waiting for news
                with anyio.move_on_after(interval * 8):
                    await self._wake.wait()
            self._wake = anyio.Event()
            try:
                behind = await self.flush()
            except Exception as e:  # the API hiccuped: what is not written is kept and retried
                self.log_.warning("recording flow runs failed (%s); retrying", e)
                await anyio.sleep(random.uniform(0.5, 2.0))
            else:
                await anyio.sleep(interval)  # lets a burst accumulate into one request

    async def flush(self) -> bool:
        """Writes what is pending; True when ended tasks' artifacts are still to be written."""
        while self._closing:
            run_id, message = self._closing[0]
            await self.close_runs([run_id], "CANCELLED", message)
            self._closing.pop(0)
        await self._create()
        await self._set_states()
        return await self._write_artifacts()

    async def _create(self) -> None:
        todo = [e for e in self._entries.values() if e.run_id is None]
        while todo:
            chunk, todo = todo[:CREATE_CHUNK], todo[CREATE_CHUNK:]
            created = await self._create_runs(chunk)
            if any(c is None for c in created):  # retried at the next flush, after a random pause
                await anyio.sleep(random.uniform(0.2, 1.5))
            for e, made in zip(chunk, created):
                if made is None:
                    continue
                e.run_id, state_type = made
                if not e.resumed:  # a resumed one's run existed: its state is set by _set_states
                    # Created Running; or, if it existed (a creation that failed on our side but
                    # landed), in the state the server says it has.
                    e.running_set = True
                    e.end_set = e.end is not None and state_type == e.end[0]
                self._attach(e)

    def _create_body(self, e: _Entry) -> dict[str, Any]:
        return {
            "parameters": e.parameters,
            "name": e.name or _run_name(e.task),
            "idempotency_key": e.key,
            "tags": [*self.tags, f"source:{e.parameters.get('source', '')}"],  # filterable per source
            "work_queue_name": self.queue_name,
            "state": _state_json("RUNNING", e.note if e.resumed else "executing"),
            "flow_id": str(self.flow_id),
            "deployment_id": str(self.deployment_id),
            "work_pool_name": self.pool_name,
        }

    async def _create_runs(self, entries: list[_Entry]) -> list[tuple[UUID, str] | None]:
        """Creates each entry's flow run, CREATE_AT_ONCE at a time: (id, its state type) or None.
        POST /flow_runs/: the deployment's route validates every run's job variables against the
        pool's template (most of the server's time per run, and we pass none); this one does not,
        and a failure costs one run, not a whole bulk transaction. A retried creation that had
        landed returns the existing run (same idempotency key) in the state it has."""
        out: list[tuple[UUID, str] | None] = [None] * len(entries)
        limit = anyio.Semaphore(CREATE_AT_ONCE)

        async def create(k: int, e: _Entry) -> None:
            async with limit:
                try:
                    resp = await self.client.request("POST", "/flow_runs/", json=self._create_body(e))
                    run = resp.json()
                    out[k] = (UUID(run["id"]), (run.get("state") or {}).get("type", ""))
                    if e.infrastructure:  # which provider and task: cancellation finds it by this
                        await self.client.update_flow_run(out[k][0], infrastructure_pid=e.infrastructure)
                except Exception as exc:  # e.g. a timeout: it may have landed, the retry will tell
                    self.log_.debug("a flow run was not created: %s", exc)

        async with anyio.create_task_group() as group:
            for k, e in enumerate(entries):
                group.start_soon(create, k, e)
        return out

    async def _set_states(self) -> None:
        groups: dict[tuple[str, str], list[_Entry]] = {}
        for e in self._entries.values():
            if e.run_id is None or e.end_set:
                continue
            if e.end is not None:
                groups.setdefault(e.end, []).append(e)
            elif not e.running_set:
                groups.setdefault(("RUNNING", e.note), []).append(e)
        for (state_type, message), entries in groups.items():
            for i in range(0, len(entries), BULK_STATE):
                chunk = entries[i : i + BULK_STATE]
                accepted = await self._force_state([e.run_id for e in chunk if e.run_id], state_type, message)
                for e in chunk:
                    if e.run_id in accepted:  # the others are tried again at the next flush
                        e.running_set = True
                        e.end_set = e.end == (state_type, message)

    async def _force_state(self, ids: list[UUID], state_type: str, message: str) -> set[UUID]:
        """Sets the runs' state; returns those the server accepted. A bulk request answers per
        run: one can be refused (e.g. SQLite busy) while the rest succeed."""
        if self._bulk:
            import httpx

            try:  # Prefect's client raises for an error status
                resp = await self.client.request(
                    "POST",
                    "/flow_runs/bulk_set_state",
                    json={
                        "flow_runs": {"id": {"any_": [str(i) for i in ids]}},
                        "state": _state_json(state_type, message),
                        "force": True,
                        "limit": BULK_STATE,
                    },
                )
                results = resp.json().get("results", [])
                refused = [r for r in results if r.get("status") != "ACCEPT"]
                if refused:
                    self.log_.debug(
                        "%d of %d state change(s) refused: %s", len(refused), len(ids), refused[0].get("details")
                    )
                return {UUID(r["flow_run_id"]) for r in results if r.get("status") == "ACCEPT"}
            except httpx.HTTPStatusError as e:
                if e.response.status_code not in (404, 405):
                    raise
            self._bulk = False
        from prefect.client.schemas.objects import StateType
        from prefect.states import State

        for i in ids:
            state = State(type=StateType(state_type), name=state_type.capitalize(), message=message)
            await self.client.set_flow_run_state(i, state, force=True)
        return set(ids)

    async def _write_artifacts(self, at_most: int = 16) -> bool:
        """The ended tasks' artifacts, a few per flush: creations and states go first. True when
        more are left."""
        from prefect.client.schemas.actions import ArtifactCreate

        ended = [(t, e) for t, e in self._entries.items() if e.end_set]
        for task, e in ended[:at_most]:
            if e.artifact is not None and e.run_id is not None:
                await self.client.create_artifact(
                    ArtifactCreate(
                        type="markdown",
                        data=e.artifact,
                        flow_run_id=e.run_id,
                        description="The task's on-chain response",
                    )
                )
                e.artifact = None
            if self._entries.get(task) is e:
                del self._entries[task]
                self._late[e.task] = e.logger  # for output that trails the task
                while len(self._late) > 256:
                    self._late.pop(next(iter(self._late)))
        return len(ended) > at_most

    def _attach(self, e: _Entry) -> None:
        from prefect.client.schemas.objects import FlowRun

        assert e.run_id is not None
        logger = self.make_logger(FlowRun(id=e.run_id, name=e.name or _run_name(e.task), flow_id=self.flow_id))
        with self._lines_lock:
            e.logger = logger
            lines, e.lines = e.lines, []
        for level, message, when in lines:
            _log_at(e.logger, level, message, when)


def _log_at(adapter: logging.LoggerAdapter[Any], level: int, message: str, when: float) -> None:
    """Logs through a flow run's logger with the time the line was written, not now (Prefect's
    API log handler sends a record's own time)."""
    logger = adapter.logger
    if not logger.isEnabledFor(level):
        return
    msg, kwargs = adapter.process(message, {})
    record = logger.makeRecord(logger.name, level, __file__, 0, msg, (), None, extra=kwargs.get("extra"))
    record.created, record.msecs = when, (when % 1) * 1000
    logger.handle(record)


def _state_json(state_type: str, message: str) -> dict[str, str]:
    return {"type": state_type, "name": state_type.capitalize(), "message": message}


def _run_name(task: str) -> str:
    return f"task-{task[2:10].lower()}"
