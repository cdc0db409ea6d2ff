"""`run_batch`'s ports to the engine's window in rounds mode: the market and the tracker over the
flow's Prefect task runs, so a round is still one `publish_tasks` and one `wait_for_results` task
run (what users see in the UI), and the results the cache answered before the batch.

The callables are the flow's (flows/run_batch.py): they call its Prefect tasks. This module has no
Prefect in it, so the engine's unit tests drive the window through these very adapters.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .engine.book import Clock, WallClock
from .engine.rounds import DEADLINE_SLACK_S
from .models import PublishedTask, TaskInput, TaskResult
from .reconcile import OnChainTask

PublishRound = Callable[[list[TaskInput], int, int, list[int], int], list[PublishedTask]]
"""(inputs, payment, ttl seconds, their indexes, attempt) -> the published tasks, in order."""
WaitRound = Callable[[list[PublishedTask], float], list[TaskResult]]
"""(published, seconds to wait at most) -> a result per task, in order."""


class TaskMarket:
    """The engine's Market over a publishing callable (run_batch: a `publish_tasks` task run,
    which finds what an earlier try of the batch published and reuses it: reading the chain
    itself, it needs no `existing`)."""

    def __init__(self, now: Callable[[], int], publish: PublishRound) -> None:
        self._now, self._publish = now, publish
        self._last_now: int | None = None

    def now(self) -> int:
        self._last_now = self._now()
        return self._last_now

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
        # The task run marks its tasks with one attempt; the window's marks say which.
        attempts = {m.get("ogpu_prefect", {}).get("attempt", 0) for m in marks}
        if len(attempts) != 1:
            raise ValueError(f"one publication of a round has one attempt, not {sorted(attempts)}")
        # The window read the chain's time just before (expiry = now + ttl): the same ttl.
        now = self._last_now if self._last_now is not None else self.now()
        return self._publish(list(items), payment, max(expiry - now, 1), list(indexes), attempts.pop())


class RoundTracker:
    """The engine's Tracker over a blocking wait (run_batch: one `wait_for_results` task run per
    round): `poll` waits for everything added since the last poll until each task ends, or its
    expiry plus a slack, or the batch `deadline` (wall clock)."""

    def __init__(self, wait: WaitRound, now: Callable[[], int], deadline: float, clock: Clock | None = None) -> None:
        self.wait, self.now, self.deadline = wait, now, deadline
        self.clock = clock or WallClock()
        self.added: list[PublishedTask] = []

    def add(self, published: Sequence[PublishedTask], *, catch_up: bool = False) -> None:
        self.added += published  # a reused task is read from the batch's first block anyway

    def poll(self) -> list[TaskResult]:
        if not self.added:
            return []
        published, self.added = self.added, []
        expiry = max(p.expiry_time for p in published)
        seconds = min(self.deadline - self.clock.time(), max(expiry - self.now(), 0) + DEADLINE_SLACK_S)
        return self.wait(published, max(seconds, 1))

    def close(self) -> None:
        self.added = []


class Answered:
    """The engine's Answers from one lookup before the batch (run_batch counts what the cache
    answered and checks the balance for the rest first): no second read per input."""

    def __init__(
        self,
        key: Callable[[TaskInput], str],
        found: Mapping[int, Any],
        items: Sequence[TaskInput],
        fill: Callable[[TaskInput, Any], None],
    ) -> None:
        self.key, self._fill = key, fill
        self.found = {key(items[i]): value for i, value in found.items()}

    def get(self, item: TaskInput) -> tuple[bool, Any]:
        k = self.key(item)
        return (k in self.found, self.found.get(k))

    def fill(self, item: TaskInput, result: Any) -> None:
        self._fill(item, result)


__all__ = ["Answered", "RoundTracker", "TaskMarket"]
