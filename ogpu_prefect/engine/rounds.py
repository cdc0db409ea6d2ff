"""The window's rounds mode (`run_batch`: every input in one window, in rounds): its options and
pure helpers. The loop is window.Window's; there is no second one.

In rounds mode a round publishes everything pending at once (what the budget cannot take ends
`over_budget`), and the failures of a round are settled and re-published only once every task of
the round has ended, up to `max_republish` times. An escalation policy raises the payment of
inputs that expired untaken, within the budget. A round that failed one visible way, while the
batch has no result, stops the batch (re-publishing would pay for the same failure again).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..amounts import format_ogpu
from ..chain.types import TaskStatus
from ..escalation import EscalationPolicy, escalated_payment
from ..models import TaskResult

DEADLINE_SLACK_S = 30
"""Seconds a round's wait runs past its tasks' expiry (their last events)."""

ROUND_STOPPED = "round %d: every input failed the same way, none re-published: %s"

log = logging.getLogger(__name__)


@dataclass
class Rounds:
    """The window's rounds mode (see module doc): `Window(..., rounds=Rounds(...))`."""

    escalator: EscalationPolicy | None = None
    escalation_name: str | None = None
    logger: logging.Logger | logging.LoggerAdapter[Any] = field(default=log)
    """Where the rounds' lines go (run_batch: its run logger, so they are in the flow run's logs)."""

    def escalate(self, pay: int, round_no: int, count: int, held: int, budget: int | None) -> int:
        """The payment of round `round_no`'s `count` re-published inputs after some expired untaken."""
        if self.escalator is None:
            return pay
        raised = escalated_payment(self.escalator, pay, round_no, count, held, budget)
        if raised > pay:
            self.logger.info(
                "round %d: escalation %s raises the payment from %s to %s (budget %s)",
                round_no,
                self.escalation_name or self.escalator.name,
                format_ogpu(pay),
                format_ogpu(raised),
                "none" if budget is None else format_ogpu(budget),
            )
        return max(raised, pay)

    def ended(self, round_no: int, size: int, failed: Sequence[TaskResult]) -> bool:
        """Logs what round `round_no` (`size` inputs) gave no result for; True when some of it
        expired untaken."""
        if failed:
            self.logger.info(
                "round %d: %d of %d input(s) gave no result (%s)",
                round_no,
                len(failed),
                size,
                ", ".join(f"{k}: {v}" for k, v in sorted(reasons(failed).items())),
            )
        return untaken(failed)


def batch_deadline(started: float, task_timeout: int, max_republish: int, batch_deadline_s: int | None) -> float:
    """The wall-clock time the batch ends by (default: enough for every republish round)."""
    if batch_deadline_s is not None:
        return started + batch_deadline_s
    return started + (max_republish + 1) * (task_timeout + DEADLINE_SLACK_S)


def reasons(outcomes: Sequence[TaskResult]) -> dict[str, int]:
    """How many of `outcomes` gave no result, by reason."""
    counts: dict[str, int] = {}
    for r in outcomes:
        if r.status != "finalized":
            counts[r.reason or r.status] = counts.get(r.reason or r.status, 0) + 1
    return counts


def untaken(outcomes: Sequence[TaskResult]) -> bool:
    """Some task expired with nobody attempting it (what escalation raises the payment for)."""
    return any(r.status == "expired" and r.chain_status is TaskStatus.NEW for r in outcomes)


def over_budget(index: int, tasks: Sequence[str], round_no: int, budget: int | None) -> TaskResult:
    """An input that failed and that round `round_no` cannot afford to re-publish."""
    return TaskResult(
        index=index,
        status="over_budget",
        tasks=list(tasks),
        republished=round_no - 1,
        error=f"re-publishing would exceed the budget of {format_ogpu(budget or 0)}",
    )


def in_input_order(n: int, results: Mapping[int, TaskResult], held: Mapping[str, int]) -> list[TaskResult]:
    """A result per input 0..n-1, each naming its tasks whose escrow is still `held` (task ->
    expiry; the window's held_back at the end: later settlings may have returned some)."""
    ordered = [results.get(i) or TaskResult(index=i, status="deadline", reason="deadline") for i in range(n)]
    return [r.model_copy(update={"open_escrow": {t: held[t] for t in r.tasks if t in held}}) for r in ordered]
