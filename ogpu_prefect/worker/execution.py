"""The provider worker's tasks in execution: each attempted task runs at once in the worker
(`Provider.execute`, in a thread) while the journal records it as a flow run; its end sets the
run's final state with a reason, its result artifact, and frees its slot."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any
from uuid import UUID

import anyio

from ..chain.errors import OGPUError
from ..events import emit_provider_event
from .journal import FlowRunJournal
from .outcomes import Executed, ProviderError, TaskCancelledError, TaskTakenError
from .provider import Provider
from .service import ServiceError
from .task_records import TaskRunJournal

ROUTE_MAX = 8
"""A service output line that names no task (a container's own output: only services run by
`ogpu_prefect.worker.runner` tag their lines) goes to every running task of its source, while at
most this many run (one warm service serves them all)."""


class TaskRuns:
    def __init__(
        self,
        provider: Provider,
        journal: FlowRunJournal | TaskRunJournal,
        task_group: Any,
        logger: logging.Logger | Any,
        *,
        max_runtime_s: float | None,
        freed: Callable[[], None],
        related: Callable[[], list[dict[str, str]]] = list,
    ) -> None:
        self.provider, self.journal, self.task_group, self.logger = provider, journal, task_group, logger
        self.max_runtime_s = max_runtime_s
        self.freed = freed
        self.related = related  # the worker and its work pool, as related resources of our events
        self.inflight: dict[str, str] = {}  # task -> source, while executing
        self.ended: dict[str, tuple[str, float]] = {}  # recently ended task -> (source, when)
        self.outcomes: dict[str, int] = {"answered": 0, "taken by others": 0, "cancelled": 0, "failed": 0}

    def busy(self, task: str) -> bool:
        return task in self.inflight

    def running_of(self, source: str) -> list[str]:
        return [t for t, s in list(self.inflight.items()) if s.lower() == source.lower()]

    def start(
        self,
        task: str,
        source: str,
        payment: int,
        *,
        publication: str = "",
        resumed: bool = False,
        run_id: UUID | None = None,
        note: str = "resumed after a worker restart",
    ) -> bool:
        """Executes an attempted task now; the journal records it as a flow run meanwhile.
        `resumed` or `run_id` (an existing flow run): the run is set Running with `note`. False if
        the task was executing already."""
        if task in self.inflight:
            if run_id is not None:
                self.journal.start(task, {}, "", run_id=run_id, note=note)
            return False
        # The key names the publication too: a task address can come back on a chain that was
        # reverted (a devnet snapshot) or reorganised, and that is a new task.
        key = f"{self.provider.chain.network.chain_id}:{self.provider.address}:{task}:{publication}"
        self.journal.start(
            task,
            {"task": task, "source": source, "payment": str(payment)},
            key.lower(),
            resumed=resumed,
            run_id=run_id,
            note=note,
            infrastructure=f"{self.provider.address}:{task}",
            block=self.provider.attempt_blocks.pop(task, None),
        )
        self.inflight[task] = source
        self.task_group.start_soon(self._execute, task, source, payment)
        return True

    async def _execute(self, task: str, source: str, payment: int) -> None:
        provider, journal = self.provider, self.journal
        journal.log(task, logging.INFO, f"running task {task} of source {source}")
        started = time.time()
        try:
            done: Executed = await anyio.to_thread.run_sync(
                lambda: provider.execute(task, payment=payment or None, max_runtime_s=self.max_runtime_s)
            )
        except TaskTakenError as e:  # nothing failed on our side
            self.outcomes["taken by others"] += 1
            journal.log(task, logging.INFO, str(e))
            journal.end(task, "CANCELLED", e.reason.value)
            return
        except TaskCancelledError as e:
            self.outcomes["cancelled"] += 1
            journal.log(task, logging.INFO, str(e))
            journal.end(task, "CANCELLED", str(e)[:1000])
            return
        except (ProviderError, ServiceError, OGPUError) as e:
            self.outcomes["failed"] += 1
            journal.log(task, logging.ERROR, f"task {task}: {e}")
            journal.end(task, "FAILED", str(e)[:1000])
            self.event("failed", task, source, {"error": str(e)[:500]})
            return
        except Exception as e:
            self.outcomes["failed"] += 1
            self.logger.exception("task %s failed unexpectedly", task)
            journal.end(task, "FAILED", f"{type(e).__name__}: {e}"[:1000])
            self.event("failed", task, source, {"error": f"{type(e).__name__}: {e}"[:500]})
            return
        finally:
            self.inflight.pop(task, None)
            self.ended[task] = (source.lower(), time.monotonic())
            while len(self.ended) > 256:
                self.ended.pop(next(iter(self.ended)))
            self.freed()
        latency = time.time() - started
        self.outcomes["answered"] += 1
        note = "its response was already on chain" if done.resumed else f"answered in {latency:.2f}s"
        journal.log(task, logging.INFO, f"response {done.response} submitted ({note}); result at {done.data_url}")
        self.event(
            "responded",
            task,
            source,
            {
                "response": done.response,
                "result_url": done.data_url,
                "payment": str(done.payment),
                "latency_s": round(latency, 3),
            },
        )
        journal.end(
            task,
            "COMPLETED",
            "response submitted on chain",
            block=done.block,
            result={"response": done.response, "result_url": done.data_url, "payment": str(done.payment)},
            artifact=(
                f"### OpenGPU task {task}\n\n| item | value |\n|---|---|\n| source | `{source}` |\n"
                f"| response | `{done.response}` |\n| result | {done.data_url} |\n"
                f"| payment (wei) | {done.payment} |\n| run time | {latency:.2f} s |\n"
            ),
        )

    def event(self, kind: str, task: str, source: str, payload: dict[str, Any]) -> None:
        """`ogpu.provider.task.<kind>`, related to the worker, its pool, the task's flow run (with
        its deployment and flow) and its task run."""
        related = self.related()
        run_id, task_run = self.journal.run_of(task), self.journal.task_run_of(task)
        if run_id is not None:
            related = [*related, *self.journal.run_related(run_id)]
        if task_run is not None:
            related.append({"prefect.resource.id": f"prefect.task-run.{task_run}", "prefect.resource.role": "task-run"})
        emit_provider_event(
            kind, self.provider.chain.network.chain_id, self.provider.address, task, source, payload, related
        )

    def route_log(self, source: str, line: str) -> None:
        """A service output line goes to the records of the tasks it names (a service run by
        `ogpu_prefect.worker.runner` starts every line a handler writes with its task), else to
        those of the source's running tasks while at most ROUTE_MAX run, else to the worker's log."""
        lowered = line.lower()
        running = self.running_of(source)
        now = time.monotonic()  # output can trail its task's end (the log stream lags)
        recent = [t for t, (s, ended) in list(self.ended.items()) if s == source.lower() and now - ended < 5]
        named = [t for t in (*running, *recent) if t.lower() in lowered]
        alone = running or recent  # a line naming no task: a service not run by our runner (docker)
        targets = named or (alone if len(alone) <= ROUTE_MAX else [])
        for t in targets:
            own = re.sub(re.escape(f"[{t}] "), "", line, count=1, flags=re.IGNORECASE)  # the runner's tag
            self.journal.log(t, logging.INFO, f"[service] {own}")
        if not targets:
            self.logger.info("[%s] %s", source[:10], line)
