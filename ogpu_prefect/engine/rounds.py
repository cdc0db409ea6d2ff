"""`run_batch`'s engine: every input in one window, in rounds.

Each round publishes what is pending (at most what the budget takes; the rest ends `over_budget`),
waits for it until its tasks' expiry (plus a slack) or the batch deadline, settles the escrow of
what gave no result and re-publishes that in the next round, up to `max_republish` times. An
escalation policy raises the payment of inputs that expired untaken, within the budget. A first
result set that failed one visible way stops the batch (re-publishing would pay for the same
failure again). Publishing and waiting are callables (the flow's Prefect tasks, or a fake).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..amounts import format_ogpu
from ..chain.types import TaskStatus
from ..client import MIN_TTL  # an expiry must lie this far ahead when published
from ..escalation import EscalationPolicy, escalated_payment
from ..escrow import EscrowReport
from ..models import PublishedTask, TaskResult
from ..publishing import PartialPublishError
from .book import Clock, EscrowBook, LedgerPort, WallClock
from .failures import same_failure

DEADLINE_SLACK_S = 30
"""Seconds a round's wait runs past its tasks' expiry (their last events)."""

Publish = Callable[[list[int], int, int, int], list[PublishedTask]]
"""(input indexes, payment, ttl seconds, round) -> the published tasks, in order."""
Wait = Callable[[list[PublishedTask], float, int], list[TaskResult]]
"""(published, seconds to wait at most, results the batch has so far) -> a result per task."""

log = logging.getLogger(__name__)


@dataclass
class RoundsOutcome:
    results: list[TaskResult]
    """One per input, in input order; `open_escrow` names its tasks whose escrow is still held."""
    book: EscrowBook
    stopped: str | None
    """Why the batch stopped early (every input failed the same way), or None."""

    @property
    def escrow(self) -> EscrowReport:
        return self.book.escrow


def batch_deadline(started: float, task_timeout: int, max_republish: int, batch_deadline_s: int | None) -> float:
    """The wall-clock time the batch ends by (default: enough for every republish round)."""
    if batch_deadline_s is not None:
        return started + batch_deadline_s
    return started + (max_republish + 1) * (task_timeout + DEADLINE_SLACK_S)


def run_rounds(
    n: int,
    payment: int,
    *,
    task_timeout: int,
    max_republish: int,
    budget: int | None,
    deadline: float,
    publish: Publish,
    wait: Wait,
    ledger: LedgerPort,
    escalator: EscalationPolicy | None = None,
    escalation_name: str | None = None,
    clock: Clock | None = None,
    logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
    answered: Mapping[int, TaskResult] | None = None,
    on_finalized: Callable[[int, TaskResult], None] | None = None,
) -> RoundsOutcome:
    """Runs inputs 0..n-1 in rounds (see module doc); every task published is in `ledger` before
    anything else can fail. `answered`: inputs with a result already (the result cache), never
    published; `on_finalized(index, result)`: each input finalized here (to fill that cache)."""
    clock = clock or WallClock()
    out = logger or log
    book = EscrowBook(budget)
    results: dict[int, TaskResult] = dict(answered or {})
    history: dict[int, list[str]] = {i: [] for i in range(n)}
    pending = [i for i in range(n) if i not in results]
    pay = payment  # this round's payment (an escalation policy raises it for untaken inputs)
    untaken = False
    stopped: str | None = None
    for round_no in range(max_republish + 1):
        if not pending or clock.time() >= deadline - MIN_TTL:
            break
        if round_no and escalator is not None and untaken:
            raised = escalated_payment(escalator, pay, round_no, len(pending), book.held, budget)
            if raised > pay:
                out.info(
                    "round %d: escalation %s raises the payment from %s to %s (budget %s)",
                    round_no,
                    escalation_name or escalator.name,
                    format_ogpu(pay),
                    format_ogpu(raised),
                    "none" if budget is None else format_ogpu(budget),
                )
                pay = raised
        fits = book.room(pay)
        room = pending if fits is None else pending[:fits]
        for i in pending[len(room) :]:
            results[i] = TaskResult(
                index=i,
                status="over_budget",
                tasks=history[i],
                republished=round_no - 1,
                error=f"re-publishing would exceed the budget of {format_ogpu(budget or 0)}",
            )
        if not room:
            break
        if round_no:
            out.info("round %d: re-publishing %d input(s)", round_no, len(room))
        ttl = int(min(task_timeout, max(deadline - clock.time(), MIN_TTL)))
        try:
            published = publish(room, pay, ttl, round_no)
        except PartialPublishError as e:
            ledger.add([p.address for p in e.published])  # the exit hook settles them
            raise
        ledger.add([p.address for p in published])
        book.published([p.address for p in published], pay)
        for p in published:
            history[p.index].append(p.address)
        seconds = max(min(deadline, clock.time() + ttl + DEADLINE_SLACK_S) - clock.time(), 1)
        outcomes = wait(published, seconds, len(results))
        failed = []
        for p, r in zip(published, outcomes):
            results[p.index] = r.model_copy(update={"tasks": history[p.index], "republished": round_no})
            if r.status == "finalized":
                book.release([p.address])
                if on_finalized is not None:
                    on_finalized(p.index, r)
            else:
                failed.append(p.address)
        if failed:
            out.info(
                "round %d: %d of %d input(s) gave no result (%s)",
                round_no,
                len(failed),
                len(published),
                ", ".join(f"{k}: {v}" for k, v in sorted(reasons(outcomes).items())),
            )
            book.account(ledger.settle(failed))
        pending = [p.index for p, r in zip(published, outcomes) if r.status != "finalized"]
        untaken = any(r.status == "expired" and r.chain_status is TaskStatus.NEW for r in outcomes)
        if not any(r.ok for r in results.values()):  # a batch with results goes on
            stopped = same_failure(outcomes)
        if stopped is not None:
            out.error("round %d: every input failed the same way, none re-published: %s", round_no, stopped)
            break
    waiting = book.escrow.waiting
    ordered = [
        (results.get(i) or TaskResult(index=i, status="deadline", tasks=history[i], reason="deadline"))
        for i in range(n)
    ]
    ordered = [r.model_copy(update={"open_escrow": {t: waiting[t] for t in r.tasks if t in waiting}}) for r in ordered]
    return RoundsOutcome(ordered, book, stopped)


def reasons(outcomes: Sequence[TaskResult]) -> dict[str, int]:
    """How many of `outcomes` gave no result, by reason."""
    counts: dict[str, int] = {}
    for r in outcomes:
        if r.status != "finalized":
            counts[r.reason or r.status] = counts.get(r.reason or r.status, 0) + 1
    return counts
