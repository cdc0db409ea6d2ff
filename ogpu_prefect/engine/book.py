"""The engine's money and its ports.

`EscrowBook` is the one account of a batch's escrow: a task counts from its publication until its
escrow is paid out or back (finalized, cancelled, reclaimed); one still held after it failed keeps
counting (`held_back`) until a later settling finds it returned. Each task counts at the payment
it was published with, so a raised (escalated) payment is counted as it is, and a task is
released at most once.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..escrow import EscrowReport
from ..models import PublishedTask, TaskInput, TaskResult
from ..reconcile import OnChainTask


class Clock(Protocol):
    """Wall time (deadlines), a monotonic clock (intervals) and sleeping between polls."""

    def time(self) -> float: ...
    def monotonic(self) -> float: ...
    def sleep(self, seconds: float) -> None: ...


class WallClock:
    """The real clock."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class Market(Protocol):
    """The chain as the engine uses it (the real one: streaming.ClientMarket)."""

    def now(self) -> int:
        """The chain's time (expiries are in it)."""
        ...

    def publish(
        self,
        items: Sequence[TaskInput],
        payment: int,
        expiry: int,
        *,
        marks: Sequence[dict[str, Any]],
        indexes: Sequence[int],
        existing: Mapping[str, OnChainTask],
    ) -> list[PublishedTask]:
        """One task per item, in order; an item whose config URL is in `existing` reuses that task
        (never published twice). A failure after the first transaction raises PartialPublishError."""
        ...


class Tracker(Protocol):
    """Follows published tasks until each ends (the real one: a waiting.Waiter)."""

    def add(self, published: Sequence[PublishedTask], *, catch_up: bool = False) -> None: ...
    def poll(self) -> list[TaskResult]:
        """The results of the tasks that ended since the last poll (`task`: the task's address)."""
        ...

    def close(self) -> None: ...


class LedgerPort(Protocol):
    """Every task a running batch has on chain, and how to settle them (the real one: batch.Ledger)."""

    def add(self, addresses: Sequence[str]) -> None: ...
    def drop(self, addresses: Sequence[str]) -> None: ...
    def settle(self, tasks: Sequence[str] | None = None) -> EscrowReport: ...


@dataclass
class EscrowBook:
    """What a batch holds in escrow now, against its budget (see module doc)."""

    budget: int | None = None
    held_wei: dict[str, int] = field(default_factory=dict)
    """task -> the wei its escrow holds, from publication until it is paid out or back."""
    held_peak: int = 0
    held_back: dict[str, int] = field(default_factory=dict)
    """Failed tasks whose escrow is still held -> their expiry (0: the node could not say)."""
    unreadable: set[str] = field(default_factory=set)
    """Of those, the ones the node could not read or settle yet."""
    escrow: EscrowReport = field(default_factory=EscrowReport)
    """Every settling's report, merged."""
    held: int = 0
    """The wei held now: the sum of `held_wei`."""

    def room(self, payment: int) -> int | None:
        """How many more tasks at `payment` the budget takes now (None: no budget)."""
        if self.budget is None:
            return None
        return max(0, (self.budget - self.held) // max(payment, 1))

    def published(self, tasks: Sequence[str], payment: int) -> None:
        for t in tasks:
            if t not in self.held_wei:  # a reused task is counted once
                self.held_wei[t] = payment
                self.held += payment
        self.held_peak = max(self.held_peak, self.held)

    def release(self, tasks: Sequence[str]) -> None:
        """Their escrow was paid out or came back: it no longer counts."""
        for t in tasks:
            self.held -= self.held_wei.pop(t, 0)
            self.held_back.pop(t, None)

    def account(self, report: EscrowReport) -> list[str]:
        """A settling's report: what it released stops counting, what is still held is held
        back (settled again later); returns the released tasks."""
        self.escrow.merge(report)
        released = [*report.cancelled, *report.reclaimed, *report.finalized]
        self.release(released)
        self.held_back.update(report.waiting)
        # Not readable now (the node failed): settled again later, still counted.
        self.held_back.update({t: 0 for t in report.unreadable})
        self.unreadable = (self.unreadable | set(report.unreadable)) - {*released, *report.waiting}
        return released

    def report(self) -> EscrowReport:
        """Every settling's counts, and what failed tasks hold now (a later settling may have
        returned what an earlier one found waiting)."""
        e = self.escrow
        waiting = {t: x for t, x in self.held_back.items() if t not in self.unreadable}
        return EscrowReport(list(e.finalized), list(e.cancelled), list(e.reclaimed), waiting, sorted(self.unreadable))

    @property
    def held_back_wei(self) -> int:
        return sum(self.held_wei.get(t, 0) for t in self.held_back)

    def due(self, now: int) -> list[str]:
        """Held-back tasks whose expiry has passed (or that could not be read): settle again."""
        return [t for t, expiry in self.held_back.items() if expiry <= now]
