"""`run_batch`: thousands of OpenGPU tasks as one flow call.

Publishes every input as a task (pipelined), waits with a per-task timeout (the tasks' on-chain
expiry) inside a batch deadline, lets the delivery method choose and pay results, reclaims the
escrow of what expired and re-publishes it (a new task, never the same one twice) up to
`max_republish` times, and never escrows more than `budget`. Results come back in input order,
with a progress artifact while it runs and a results table and cost summary at the end.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any, Sequence

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, create_table_artifact
from prefect.artifacts import update_progress_artifact
from prefect.runtime import flow_run

from ogpu_prefect.chain.errors import BudgetExceededError, ExpiryOutOfRangeError, OGPUError
from ogpu_prefect.client import MIN_TTL
from ogpu_prefect.models import PublishedTask, TaskResult
from ogpu_prefect.tasks import BlockOrName, make_client, publish_tasks, reclaim_expired, wait_for_results

ETHER = 10**18


def _ogpu(wei: int) -> str:
    return f"{wei / ETHER:.6f}"


@flow(name="ogpu-run-batch", log_prints=True)
def run_batch(
    source: str,
    inputs: Sequence[Any],
    payment: int,
    network: BlockOrName,
    wallet: BlockOrName,
    storage: BlockOrName,
    *,
    function_name: str | None = None,
    delivery: str = "first_response",
    delivery_options: dict[str, Any] | None = None,
    task_timeout: int = 300,
    batch_deadline: int | None = None,
    max_republish: int = 1,
    budget: int | None = None,
    poll_interval: float = 0.1,
) -> list[TaskResult]:
    """Runs `inputs` on `source`, one task each, paying `payment` wei per task.

    - `task_timeout`: seconds a task may run; it is the task's on-chain expiry, after which its
      escrow is reclaimed and the input re-published (up to `max_republish` times).
    - `batch_deadline`: seconds for the whole batch (default: enough for every republish round).
    - `budget`: a ceiling, in wei, on what the batch may have in escrow at once, counting every
      publication; the flow refuses to publish beyond it (the first round raises
      `BudgetExceededError` before any transaction; later rounds mark what does not fit
      `over_budget`).
    """
    log = get_run_logger()
    client = make_client(network, wallet)
    chain = client.chain
    n = len(inputs)
    started = time.time()
    deadline = started + (batch_deadline if batch_deadline is not None else (max_republish + 1) * (task_timeout + 30))
    batch_id = str(flow_run.get_id() or uuid.uuid4())
    start_block = chain.block_number() + 1
    terms = client.source_terms(source)
    if not MIN_TTL <= task_timeout <= terms.max_expiry_duration:
        raise ExpiryOutOfRangeError("task_timeout", f"{task_timeout}s is outside [{MIN_TTL}, "
                                                    f"{terms.max_expiry_duration}] (the source's maxExpiryDuration)")
    if budget is not None and n * payment > budget:
        raise BudgetExceededError("budget", f"{n} tasks x {payment} wei = {n * payment} wei exceeds the budget "
                                            f"of {budget} wei; nothing was published")
    progress_id = create_progress_artifact(progress=0.0, key="ogpu-batch-progress",
                                           description=f"OpenGPU batch of {n} task(s) on {source}")

    results: dict[int, TaskResult] = {}
    history: dict[int, list[str]] = {i: [] for i in range(n)}
    committed = 0  # wei in escrow for this batch right now
    pending = list(range(n))
    round_no = 0

    reporter = _ProgressReporter(progress_id)

    def progress(done: int, total: int) -> None:
        reporter.set(100.0 * min(len(results) + done, n) / max(n, 1))

    while pending and round_no <= max_republish and time.time() < deadline:
        room = pending if budget is None else pending[: max(0, (budget - committed) // payment)]
        for i in pending[len(room):]:
            results[i] = TaskResult(index=i, status="over_budget", tasks=history[i], republished=round_no - 1,
                                    error=f"re-publishing would exceed the budget of {budget} wei")
        if not room:
            break
        ttl = int(min(task_timeout, max(deadline - time.time(), 15)))
        published: list[PublishedTask] = publish_tasks(
            source, [inputs[i] for i in room], payment, network, wallet, storage, ttl=ttl,
            function_name=function_name, batch_id=batch_id, indexes=room, attempt=round_no,
            reconcile_from_block=start_block,
        )
        committed += payment * len(published)
        for p in published:
            history[p.index].append(p.address)
        outcomes = wait_for_results(
            published, network, wallet, delivery=delivery, delivery_options=delivery_options,
            from_block=start_block, deadline_s=max(deadline - time.time(), 1), poll_interval=poll_interval,
            progress=progress,
        )
        retry, expired = [], []
        for p, r in zip(published, outcomes):
            r = r.model_copy(update={"tasks": history[p.index], "republished": round_no})
            if r.status == "finalized":
                committed -= payment
                results[p.index] = r
            else:
                results[p.index] = r
                retry.append(p.index)
                if r.chain_status is None or not r.chain_status.is_final:
                    expired.append(p)
                else:
                    committed -= payment  # canceled/expired on chain: escrow already back
        if expired:
            reclaimable = [p.address for p in expired if p.expiry_time <= chain.now()]
            if reclaimable:
                try:
                    reclaim_expired(reclaimable, network, wallet)
                    committed -= payment * len(reclaimable)
                except OGPUError as e:  # a network without our Controller.reclaimExpired (docs/contracts.md)
                    log.warning("could not reclaim the escrow of %d expired task(s): %s", len(reclaimable), e)
        pending = retry
        round_no += 1
        if pending and round_no <= max_republish:
            log.info("re-publishing %d input(s) (round %d)", len(pending), round_no)

    reporter.close()
    update_progress_artifact(progress_id, progress=100.0)
    ordered = [results.get(i) or TaskResult(index=i, status="deadline", tasks=history[i]) for i in range(n)]
    _report(ordered, payment, time.time() - started, source)
    return ordered


class _ProgressReporter:
    """Updates the progress artifact from a thread: the wait loop never blocks on the API (a
    server on SQLite under load can hold a write for seconds). Only the latest value is sent."""

    def __init__(self, artifact_id: Any, every_s: float = 0.5) -> None:
        self.artifact_id, self.every_s = artifact_id, every_s
        self._value: float | None = None
        self._changed = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="ogpu-batch-progress", daemon=True)
        self._thread.start()

    def set(self, value: float) -> None:
        self._value = value
        self._changed.set()

    def close(self) -> None:
        self._closed = True
        self._changed.set()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._closed:
            self._changed.wait()
            self._changed.clear()
            if self._closed or self._value is None:
                continue
            try:
                update_progress_artifact(self.artifact_id, progress=self._value)
            except Exception:  # progress is cosmetic; the final update happens in the flow
                pass
            time.sleep(self.every_s)


def _report(results: list[TaskResult], payment: int, wall: float, source: str) -> None:
    # Columns, not a dict per row: half the JSON and half the peak memory at 10,000 tasks.
    columns = {"input": [r.index for r in results], "task": [r.task or "" for r in results],
               "status": [r.status for r in results], "provider": [r.provider or "" for r in results],
               "payment (OGPU)": [_ogpu(r.payment) if r.status == "finalized" else "" for r in results],
               "latency (s)": [f"{r.latency_s:.2f}" if r.latency_s is not None else "" for r in results],
               "republished": [r.republished for r in results]}
    create_table_artifact(columns, key="ogpu-batch-results", description=f"OpenGPU batch on source {source}")
    del columns
    done = [r for r in results if r.status == "finalized"]
    spent = sum(r.payment for r in done)
    lat = sorted(r.latency_s for r in done if r.latency_s is not None)
    p50 = lat[len(lat) // 2] if lat else 0.0
    p95 = lat[min(len(lat) - 1, int(len(lat) * 0.95))] if lat else 0.0
    by_status: dict[str, int] = {}
    for r in results:
        by_status[r.status] = by_status.get(r.status, 0) + 1
    create_markdown_artifact(
        key="ogpu-batch-cost",
        markdown="\n".join([
            f"# OpenGPU batch: {len(done)}/{len(results)} finalized",
            "",
            "| | |", "|---|---|",
            f"| spent | {_ogpu(spent)} OGPU ({spent} wei) |",
            f"| offered per task | {_ogpu(payment)} OGPU |",
            f"| average paid per result | {_ogpu(spent // max(len(done), 1))} OGPU |",
            f"| statuses | {', '.join(f'{k}: {v}' for k, v in sorted(by_status.items()))} |",
            f"| wall time | {wall:.1f} s |",
            f"| latency p50 / p95 | {p50:.2f} s / {p95:.2f} s |",
        ]),
        description="Cost summary",
    )
    print(f"{len(done)}/{len(results)} finalized, spent {_ogpu(spent)} OGPU in {wall:.1f}s")
