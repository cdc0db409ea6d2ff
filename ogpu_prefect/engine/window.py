"""The batch engine's one loop: at most `max_in_flight` tasks on chain at once (the streaming
flows), or every input in one window, in rounds (`run_batch`: `rounds=Rounds(...)`, rounds.py).

Inputs are taken one at a time, published a chunk at a time as earlier tasks end, and every
result is handed to `emit` as it ends (the flows write it to storage: their checkpoint), so memory
follows the window, not the number of inputs. Escrow never exceeds `budget` (book.EscrowBook).
A resumed run is given what earlier runs published (`existing`, config URL -> task): an input's
task with the same config URL is reused and read from the chain, never published again.

A front-end drives it with `run` (until every input of an iterator has a result), or adds inputs
as they come (`add`) and calls `step` (publish what fits, poll once, settle) while it waits for
results: the results come out through `emit` as tasks end.

Rounds mode changes what a refill takes and when failures are handled, not the loop: everything
pending is published at once (what the budget cannot take ends `over_budget`, `max_in_flight` is
not used), and a round's failures are settled, counted against the stop rule and re-published only
once every task of the round has ended.
"""

from __future__ import annotations

import logging
import sys
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..chain.errors import EscrowHeldError
from ..client import MIN_TTL  # an expiry must lie this far ahead when published
from ..escrow import EscrowReport
from ..models import TaskInput, TaskResult
from ..publishing import PartialPublishError
from ..reconcile import OnChainTask
from ..result_cache import cached_result
from .book import Clock, EscrowBook, LedgerPort, Market, Tracker, WallClock
from .failures import same_failure
from .rounds import ROUND_STOPPED, Rounds, over_budget

log = logging.getLogger(__name__)

REFILL_FRACTION = 8
"""Publish again once 1/8 of the slots are free (fewer, larger publications), or when idle."""
RESETTLE_S = 5.0
"""How often escrow still held by failed tasks is settled again (their expiry may have passed)."""
STALL_S = 300
"""Seconds past their expiry that failed tasks may hold the whole budget before the batch stops."""
NOTHING_YET = (-1, None)
"""What a live feed of inputs (call_engine.py) yields when it has none now but may have more."""


class Answers(Protocol):
    """Results already paid for (result_cache.ResultCache): an input answered before is emitted
    from it, never published; each input finalized here is added."""

    def get(self, item: TaskInput) -> tuple[bool, Any]: ...
    def fill(self, item: TaskInput, result: Any) -> None: ...


@dataclass
class Entry:
    """One input while it is in flight: what to re-publish, and the tasks it had."""

    index: int
    item: TaskInput
    attempt: int = 0
    tasks: list[str] = field(default_factory=list)


@dataclass
class Limits:
    payment: int
    task_timeout: int
    max_in_flight: int
    max_republish: int
    budget: int | None = None
    deadline: float | None = None  # wall clock after which nothing more is published
    poll_interval: float = 0.2

    @property
    def slots(self) -> int:
        if self.budget is None or self.payment == 0:
            return self.max_in_flight
        return min(self.max_in_flight, self.budget // max(self.payment, 1))


def batch_marks(batch_key: str | None, indexes: list[int], attempt: int) -> list[dict[str, object]]:
    """The marks a batch puts in each task's config: the same (batch, input, round) always gives
    the same config URL, which is how a retry finds what it already published (reconcile.py)."""
    return [
        {"ogpu_prefect": {"batch": batch_key, "index": i, "attempt": attempt}} if batch_key else {} for i in indexes
    ]


class Window:
    """One streaming batch's loop (see module doc)."""

    def __init__(
        self,
        market: Market,
        tracker: Tracker,
        ledger: LedgerPort,
        limits: Limits,
        emit: Callable[[TaskResult], None],
        *,
        key: str,
        existing: Mapping[str, OnChainTask] | None = None,
        finalized_before: int = 0,
        clock: Clock | None = None,
        cache: Answers | None = None,
        rounds: Rounds | None = None,
    ) -> None:
        self.market, self.tracker, self.ledger, self.limits, self.emit = market, tracker, ledger, limits, emit
        self.cache, self.rounds = cache, rounds
        self.pay = limits.payment  # rounds mode: raised by escalation
        self.key = key
        self.clock = clock or WallClock()
        self.existing: dict[str, OnChainTask] = dict(existing or {})
        self.book = EscrowBook(limits.budget)
        self.inflight: dict[str, Entry] = {}
        self.retry: deque[Entry] = deque()
        self.queued: deque[Entry] = deque()  # inputs given by `add`, published before the iterator's
        self.done = 0
        self.finalized = finalized_before  # earlier runs' count
        self.first_published = 0  # inputs published for the first time
        self.first_failures: list[TaskResult] = []  # their failures, while nothing has finalized
        self.stopped: str | None = None  # why no more inputs are published
        self.exhausted = False
        self.any_ok = False  # some input has a result (rounds mode's stop rule)
        self.round_no = 0  # rounds mode: the round being published or waited for
        self.round_size = 0
        self.round_failed: list[tuple[Entry, TaskResult]] = []
        self.untaken = False  # the round before had tasks that expired untaken
        self._last_resettle = self.clock.monotonic()

    # ---- the money, as the flows report it ----

    @property
    def held(self) -> int:
        return self.book.held

    @property
    def held_peak(self) -> int:
        return self.book.held_peak

    @property
    def held_back(self) -> dict[str, int]:
        return self.book.held_back

    @property
    def unreadable(self) -> set[str]:
        return self.book.unreadable

    # ---- the loop ----

    def run(self, items: Iterator[tuple[int, TaskInput]]) -> None:
        """Until every input has a result; then settles once more what failed tasks still hold."""
        try:
            while self.step(items):
                pass
            if self.book.held_back:
                self._resettle()
        finally:
            self.tracker.close()

    def add(self, index: int, item: TaskInput) -> None:
        """One more input (a front-end that submits inputs as they come); `step` publishes it."""
        self.queued.append(Entry(index, item))

    def step(self, items: Iterator[tuple[int, TaskInput]] | None = None) -> bool:
        """Publishes what fits, polls once, settles what is due; False once nothing is left (once
        `stopped`, what `add` queued stays in `queued`, unpublished)."""
        items = items if items is not None else iter(())
        if self.stopped is not None:
            if not self.inflight:
                return False
        elif self._out_of_time():
            self.exhausted = self._close_inputs(items, self.exhausted)
        elif not self.exhausted or self.retry or self.queued:
            self.exhausted = self._refill(items, self.exhausted)
        if self.exhausted and not self.inflight and not self.retry and not self.queued:
            return False
        ended = self.tracker.poll()
        if ended:
            self._ended(ended)
        if self.book.held_back and self.clock.monotonic() - self._last_resettle >= RESETTLE_S:
            self._last_resettle = self.clock.monotonic()
            self._resettle()
            if not self.inflight:
                self._check_stalled()
        if not ended:
            self.clock.sleep(self.limits.poll_interval)
        return True

    # ---- publishing ----

    def _out_of_time(self) -> bool:
        d = self.limits.deadline
        return d is not None and self.clock.time() >= d - MIN_TTL

    def _refill(self, items: Iterator[tuple[int, TaskInput]], exhausted: bool) -> bool:
        if self.rounds is not None:
            return self._next_round(items, exhausted)
        free = self.limits.slots - len(self.inflight)
        if self.limits.budget is not None and self.limits.payment:
            free = min(free, self.book.room(self.limits.payment) or 0)
        if free <= 0 or (self.inflight and free < max(1, self.limits.slots // REFILL_FRACTION)):
            return exhausted
        batch, exhausted = self._take(items, free, exhausted)
        if batch:
            self._publish(batch)
        return exhausted

    def _next_round(self, items: Iterator[tuple[int, TaskInput]], exhausted: bool) -> bool:
        """Rounds mode: once the round before has wholly ended, everything pending at once."""
        assert self.rounds is not None
        if self.inflight:
            return exhausted
        batch, exhausted = self._take(items, sys.maxsize, exhausted)
        if self.round_no and self.untaken and batch:
            self.pay = self.rounds.escalate(self.pay, self.round_no, len(batch), self.held, self.limits.budget)
        fits = self.book.room(self.pay)
        if fits is not None and fits < len(batch):
            for e in batch[fits:]:
                held = {t: self.held_back[t] for t in e.tasks if t in self.held_back}
                self._write(over_budget(e.index, e.tasks, self.round_no, self.limits.budget), held)
            batch = batch[:fits]
        if batch:
            if self.round_no:
                self.rounds.logger.info("round %d: re-publishing %d input(s)", self.round_no, len(batch))
            self.round_size = len(batch)
            self._publish(batch)
        return exhausted

    def _take(self, items: Iterator[tuple[int, TaskInput]], free: int, exhausted: bool) -> tuple[list[Entry], bool]:
        """Up to `free` inputs: to re-publish first, then added ones, then the iterator's."""
        batch: list[Entry] = []
        for waiting in (self.retry, self.queued):
            while len(batch) < free and waiting:
                batch.append(waiting.popleft())
        while len(batch) < free and not exhausted:
            nxt = next(items, None)
            if nxt is None:
                exhausted = True
            elif nxt is NOTHING_YET:
                break
            elif not self._answered(Entry(*nxt)):
                batch.append(Entry(*nxt))
        return batch, exhausted

    def _answered(self, e: Entry) -> bool:
        """Emits an input's stored result when the cache has one."""
        hit, value = self.cache.get(e.item) if self.cache is not None and e.attempt == 0 else (False, None)
        if hit:
            self._write(cached_result(e.index, value))
        return hit

    def _publish(self, batch: list[Entry]) -> None:
        lim = self.limits
        ttl = lim.task_timeout
        if lim.deadline is not None:
            ttl = int(min(ttl, max(lim.deadline - self.clock.time(), MIN_TTL)))
        expiry = self.market.now() + ttl
        marks = [m for e in batch for m in batch_marks(self.key, [e.index], e.attempt)]
        try:
            published = self.market.publish(
                [e.item for e in batch],
                self.pay,
                expiry,
                marks=marks,
                indexes=[e.index for e in batch],
                existing=self.existing,
            )
        except PartialPublishError as e:
            self.ledger.add([p.address for p in e.published])  # the exit hook settles them
            raise
        reused = {p.address for p in published if p.config_url in self.existing}
        for p in published:
            self.existing.pop(p.config_url, None)
        self.ledger.add([p.address for p in published])
        for e, p in zip(batch, published):
            e.tasks.append(p.address)
            self.inflight[p.address] = e
        self.first_published += sum(1 for e in batch if e.attempt == 0)
        self.book.published([p.address for p in published], self.pay)
        self.tracker.add([p for p in published if p.address not in reused])
        if reused:
            self.tracker.add([p for p in published if p.address in reused], catch_up=True)

    def _close_inputs(self, items: Iterator[tuple[int, TaskInput]], exhausted: bool) -> bool:
        """Past the deadline: what was never published (or waits to be again) ends as `deadline`."""
        while self.retry:
            e = self.retry.popleft()
            self._write(self._final(e, "deadline", "the batch deadline passed before it could be re-published"))
        while self.queued:
            e = self.queued.popleft()
            self._write(self._final(e, "deadline", "the batch deadline passed before it was published"))
        if not exhausted:
            for i, item in items:
                self._write(
                    self._final(Entry(i, item), "deadline", "the batch deadline passed before it was published")
                )
        return True

    # ---- results ----

    def _ended(self, ended: list[TaskResult]) -> None:
        failed: list[tuple[Entry, TaskResult]] = []
        for result in ended:
            address = str(result.task)
            e = self.inflight.pop(address)
            r = result.model_copy(update={"tasks": list(e.tasks), "republished": e.attempt})
            if r.status == "finalized":
                self.ledger.drop([address])
                self.book.release([address])
                self.finalized += 1
                if self.cache is not None:
                    self.cache.fill(e.item, r.result)
                self._write(r)
            else:
                failed.append((e, r))
        if self.rounds is not None:
            self.round_failed += failed
            if self.inflight:
                return  # the round goes on: its failures are handled once it has ended
            failed, self.round_failed = self.round_failed, []
            self.untaken = self.rounds.ended(self.round_no, self.round_size, [r for _, r in failed])
        if failed:
            self._failed(failed)
        if self.rounds is not None:
            self.round_no += 1

    def _failed(self, failed: list[tuple[Entry, TaskResult]]) -> None:
        """Settles what failed, then re-publishes it (up to max_republish) or hands it out."""
        self._account(self.ledger.settle([e.tasks[-1] for e, _ in failed]))
        self._stop_if_all_fail(failed)
        for e, r in failed:
            if e.attempt < self.limits.max_republish and not self._out_of_time() and self.stopped is None:
                self.retry.append(Entry(e.index, e.item, e.attempt + 1, e.tasks))
            else:
                held = self.book.held_back
                self._write(r, {t: held[t] for t in e.tasks if t in held})

    def _stop_if_all_fail(self, failed: list[tuple[Entry, TaskResult]]) -> None:
        """Nothing finalized yet and a whole first window (every input published so far, at most
        `slots`) failed one visible way: republishing would pay for the same failure again. Rounds
        mode: a whole round failed one visible way while no input has a result."""
        if self.rounds is not None:
            self.stopped = None if self.any_ok else same_failure([r for _, r in failed])
            if self.stopped is not None:
                self.rounds.logger.error(ROUND_STOPPED, self.round_no, self.stopped)
            return
        if self.stopped is not None or self.finalized:
            return
        self.first_failures.extend(r for e, r in failed if e.attempt == 0)
        if len(self.first_failures) >= min(self.limits.slots, self.first_published):
            self.stopped = same_failure(self.first_failures)
            if self.stopped is not None:
                log.error("every input failed the same way; publishing no more: %s", self.stopped)

    def _account(self, report: EscrowReport) -> None:
        """Escrow that came back (or was paid) stops counting against the budget."""
        self.ledger.drop(self.book.account(report))

    def _resettle(self) -> None:
        due = self.book.due(self.market.now())
        if due:
            self._account(self.ledger.settle(due))

    def _check_stalled(self) -> None:
        """Nothing in flight, and the budget held by failed tasks whose escrow has not come back
        long after their expiry (a network that returns it late, or never): stop, saying so.
        Rounds mode ends what the budget cannot take `over_budget` instead."""
        if self.rounds is not None:
            return
        room = (self.limits.budget - self.book.held) if self.limits.budget is not None else None
        if room is None or room >= self.limits.payment:
            return
        if self.market.now() < max(self.book.held_back.values()) + STALL_S:
            return
        raise EscrowHeldError(
            f"the budget is held by {len(self.book.held_back)} failed task(s) whose escrow has not come back "
            f"{STALL_S}s after their expiry; nothing more can be published (a run with the same batch_key "
            f"resumes once it is back)",
            list(self.book.held_back),
        )

    def _final(self, e: Entry, status: str, error: str) -> TaskResult:
        return TaskResult(
            index=e.index, status=status, tasks=list(e.tasks), republished=e.attempt, error=error, reason=status
        )

    def _write(self, r: TaskResult, open_escrow: dict[str, int] | None = None) -> None:
        if open_escrow is not None:
            r = r.model_copy(update={"open_escrow": open_escrow})
        self.any_ok = self.any_ok or r.ok
        self.emit(r)
        self.done += 1
