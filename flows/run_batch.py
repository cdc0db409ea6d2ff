"""`run_batch`: thousands of OpenGPU tasks as one flow call.

Publishes every input as a task (pipelined), waits with a per-task timeout (the tasks' on-chain
expiry) inside a batch deadline, lets the delivery method choose and pay results, settles the
escrow of what gave no result (cancel, or reclaim where the deployment can) and re-publishes it (a
new task, never the same one twice) up to `max_republish` times, and never holds more than `budget`
in escrow. Every parameter is checked before the first transaction; a retry, a re-run or a new run
with the same `batch_key` publishes only what is missing; a failure, crash or cancellation settles
the escrow of what it leaves (ogpu_prefect/batch.py). Results come back in input order, with a
progress artifact while it runs and results, cost and escrow artifacts at the end.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from prefect import get_run_logger
from prefect.runtime import flow_run

from ogpu_prefect.batch import BatchIncompleteError, Ledger, check_delivery, live_ledger, open_batch
from ogpu_prefect.batch_report import ProgressReporter, report_batch, report_escrow
from ogpu_prefect.chain.errors import (
    BudgetExceededError,
    ExpiryOutOfRangeError,
    InvalidInputError,
    PaymentOutOfRangeError,
    UnknownSourceInputError,
)
from ogpu_prefect.client import MIN_TTL
from ogpu_prefect.escrow import EscrowReport
from ogpu_prefect.flowkit import redact_stored_parameters, redacting_flow, settle_on_exit
from ogpu_prefect.models import TaskResult
from ogpu_prefect.publishing import PartialPublishError
from ogpu_prefect.tasks import BlockOrName, coerce_inputs, make_client, publish_tasks, wait_for_results
from ogpu_prefect.validation import check_address, check_int, check_name, check_number, parse_delivery, refuse_secret

DEADLINE_SLACK_S = 30
"""Seconds a round's wait runs past its tasks' expiry (their last events)."""


@redacting_flow(
    name="ogpu-run-batch",
    log_prints=True,
    on_failure=[settle_on_exit],
    on_crashed=[settle_on_exit],
    on_cancellation=[settle_on_exit],
)
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
    batch_key: str | None = None,
) -> list[TaskResult]:
    """Runs `inputs` on `source`, one task each, paying `payment` wei per task.

    - `task_timeout`: seconds a task may run; it is the task's on-chain expiry, after which its
      escrow is settled and the input re-published (up to `max_republish` times).
    - `batch_deadline`: seconds for the whole batch (default: enough for every republish round).
    - `budget`: a ceiling, in wei, on what the batch may have in escrow at once, counting every
      publication; the flow refuses to publish beyond it (the first round raises
      `BudgetExceededError` before any transaction; later rounds mark what does not fit
      `over_budget`).
    - `batch_key`: the batch's identity (default: this flow run's id). A retry of the flow run, or
      any run with the same key, finds what the key already published and publishes only the rest.
    """
    log = get_run_logger()
    redact_stored_parameters()
    started = time.time()
    n = _check_parameters(
        source,
        inputs,
        payment,
        function_name,
        delivery,
        delivery_options,
        task_timeout,
        batch_deadline,
        max_republish,
        budget,
        poll_interval,
        batch_key,
    )
    items = coerce_inputs(inputs, function_name)
    strategy = parse_delivery(delivery, delivery_options)
    client = make_client(network, wallet, storage)
    terms = client.source_terms(source)
    check_delivery(strategy, terms.delivery_method)
    if not MIN_TTL <= task_timeout <= terms.max_expiry_duration:
        raise ExpiryOutOfRangeError(
            "task_timeout",
            f"{task_timeout}s is outside [{MIN_TTL}, {terms.max_expiry_duration}] (the source's maxExpiryDuration)",
        )
    client.check_batch(terms, n, payment, client.chain.now() + task_timeout)
    key = batch_key or str(flow_run.get_id())
    record = open_batch(client, key, terms.address)
    ledger = Ledger(client, record)
    live_ledger(key, ledger)
    deadline = started + (
        batch_deadline if batch_deadline is not None else (max_republish + 1) * (task_timeout + DEADLINE_SLACK_S)
    )
    results: dict[int, TaskResult] = {}
    history: dict[int, list[str]] = {i: [] for i in range(n)}
    held = 0  # wei of this batch in escrow right now
    pending = list(range(n))
    reporter = ProgressReporter(n, f"OpenGPU batch of {n} task(s) on {terms.address}")
    escrow = EscrowReport()
    try:
        for round_no in range(max_republish + 1):
            if not pending or time.time() >= deadline - MIN_TTL:
                break
            room = pending if budget is None else pending[: max(0, (budget - held) // max(payment, 1))]
            for i in pending[len(room) :]:
                results[i] = TaskResult(
                    index=i,
                    status="over_budget",
                    tasks=history[i],
                    republished=round_no - 1,
                    error=f"re-publishing would exceed the budget of {budget} wei",
                )
            if not room:
                break
            if round_no:
                log.info("round %d: re-publishing %d input(s)", round_no, len(room))
            ttl = int(min(task_timeout, max(deadline - time.time(), MIN_TTL)))
            try:
                published = publish_tasks(
                    source,
                    [items[i] for i in room],
                    payment,
                    network,
                    wallet,
                    storage,
                    ttl=ttl,
                    batch_key=key,
                    indexes=room,
                    attempt=round_no,
                    reconcile_from_block=record.from_block,
                )
            except PartialPublishError as e:
                ledger.add([p.address for p in e.published])
                raise
            ledger.add([p.address for p in published])
            held += payment * len(published)
            for p in published:
                history[p.index].append(p.address)
            outcomes = wait_for_results(
                published,
                network,
                wallet,
                storage,
                delivery=delivery,
                delivery_options=delivery_options,
                from_block=record.from_block,
                deadline_s=max(min(deadline, time.time() + ttl + DEADLINE_SLACK_S) - time.time(), 1),
                poll_interval=poll_interval,
                progress=reporter.round_progress(len(results)),
            )
            failed = []
            for p, r in zip(published, outcomes):
                results[p.index] = r.model_copy(update={"tasks": history[p.index], "republished": round_no})
                if r.status == "finalized":
                    held -= payment
                else:
                    failed.append(p.address)
            if failed:
                log.info(
                    "round %d: %d of %d input(s) gave no result (%s)",
                    round_no,
                    len(failed),
                    len(published),
                    ", ".join(f"{k}: {v}" for k, v in sorted(_reasons(outcomes).items())),
                )
                settled = ledger.settle(failed)
                escrow.merge(settled)
                held -= payment * (len(settled.cancelled) + len(settled.reclaimed) + len(settled.finalized))
            pending = [p.index for p, r in zip(published, outcomes) if r.status != "finalized"]
    finally:
        reporter.close()
    ordered = [
        results.get(i) or TaskResult(index=i, status="deadline", tasks=history[i], reason="deadline") for i in range(n)
    ]
    ordered = [
        r.model_copy(update={"open_escrow": {t: escrow.waiting[t] for t in r.tasks if t in escrow.waiting}})
        for r in ordered
    ]
    report_batch(ordered, payment, time.time() - started, terms.address)
    if escrow.open_escrow:
        log.warning("escrow of %d task(s) is still held: %s", len(escrow.open_escrow), escrow.summary())
        report_escrow(escrow, key)
    if escrow.unreadable:  # the hook settles them if the node is back by then
        raise BatchIncompleteError(
            f"batch {key}: {len(escrow.unreadable)} task(s) could not be settled (the node "
            f"did not answer); a run with batch_key={key!r} settles them",
            escrow.unreadable,
        )
    live_ledger(key, drop=True)
    return ordered


def _reasons(outcomes: Sequence[TaskResult]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in outcomes:
        if r.status != "finalized":
            counts[r.reason or r.status] = counts.get(r.reason or r.status, 0) + 1
    return counts


def _check_parameters(
    source: Any,
    inputs: Any,
    payment: Any,
    function_name: Any,
    delivery: Any,
    delivery_options: Any,
    task_timeout: Any,
    batch_deadline: Any,
    max_republish: Any,
    budget: Any,
    poll_interval: Any,
    batch_key: Any,
) -> int:
    """Every parameter that needs no chain, checked before anything else (the number of inputs)."""
    check_address("source", source, UnknownSourceInputError)
    if isinstance(inputs, (str, bytes, dict)) or not isinstance(inputs, Sequence) or not inputs:
        raise InvalidInputError("inputs", "a non-empty list of inputs")
    check_int("payment", payment, minimum=0, maximum=2**96 - 1, error=PaymentOutOfRangeError)
    check_name("delivery", delivery)
    refuse_secret("delivery_options", delivery_options)
    if delivery_options is not None and not isinstance(delivery_options, dict):
        raise InvalidInputError("delivery_options", f"a dict of options, not {type(delivery_options).__name__}")
    check_int("task_timeout", task_timeout, minimum=MIN_TTL, error=ExpiryOutOfRangeError)
    if batch_deadline is not None:
        check_int("batch_deadline", batch_deadline, minimum=2 * MIN_TTL, error=ExpiryOutOfRangeError)
    check_int("max_republish", max_republish, minimum=0, maximum=100)
    if budget is not None:
        check_int("budget", budget, minimum=0)
        if len(inputs) * payment > budget:
            raise BudgetExceededError(
                "budget",
                f"{len(inputs)} tasks x {payment} wei = {len(inputs) * payment} wei "
                f"exceeds the budget of {budget} wei; nothing was published",
            )
    check_number("poll_interval", poll_interval, exclusive_minimum=0, maximum=60)
    if batch_key is not None:
        check_name("batch_key", batch_key)
    if function_name is not None:
        check_name("function_name", function_name)
    return len(inputs)
