"""Streaming batches: any number of inputs with at most `max_in_flight` tasks on chain at once.

Inputs are taken one at a time (stream_io.py), published a chunk at a time as earlier tasks end,
and every result is written to storage as it ends, so memory follows `max_in_flight`, not the
number of inputs. Escrow never exceeds `budget`: a task counts from its publication until its
escrow is paid out or back (finalized, cancelled, reclaimed); one still held after it failed keeps
counting until a later settling finds it returned.

Crash-safe like run_batch (batch.py): the batch's record is saved before the first transaction,
the results manifest is its checkpoint, every task config carries (batch, input, attempt) marks,
and a resumed run reuses the tasks an earlier run published for the inputs it had not finished
(their config URLs are the same), reading their state from the chain instead of publishing again.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pydantic import BaseModel

from .batch import Ledger, same_failure
from .chain.errors import EscrowHeldError
from .escrow import EscrowReport
from .events import emit_task_event
from .models import TaskInput, TaskResult
from .provider_failures import from_prefect_events
from .publishing import PartialPublishError
from .reconcile import OnChainTask, find_published
from .result_cache import ResultCache, cached_result
from .stream_io import ResultsWriter
from .waiting import Tracked, Waiter

if TYPE_CHECKING:
    from .client import OGPUClient, SourceTerms
    from .delivery import DeliveryStrategy
    from .reputation import ReputationBook

log = logging.getLogger(__name__)

MIN_TTL = 10  # as client.MIN_TTL: an expiry must lie this far ahead when published
REFILL_FRACTION = 8
"""Publish again once 1/8 of the slots are free (fewer, larger publications), or when idle."""
RESETTLE_S = 5.0
"""How often escrow still held by failed tasks is settled again (their expiry may have passed)."""
STALL_S = 300
"""Seconds past their expiry that failed tasks may hold the whole budget before the batch stops."""
NOTHING_YET = (-1, None)
"""What a live feed of inputs (call_engine.py) yields when it has none now but may have more."""


@dataclass
class Entry:
    """One input while it is in flight: what to re-publish, and the tasks it had."""

    index: int
    item: TaskInput
    attempt: int = 0
    tasks: list[str] = field(default_factory=list)


class StreamSummary(BaseModel):
    """What a streaming batch did; its results are in `results_url` (JSON lines, see stream_io)."""

    batch_key: str
    inputs: int
    counts: dict[str, int]
    paid_wei: int
    held_peak_wei: int
    escrow_held_wei: int
    results_url: str
    manifest_url: str
    parts: list[str]
    wall_s: float


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


class Stream:
    """One streaming batch's loop (see module doc); `run` returns when every input has a result."""

    def __init__(
        self,
        client: OGPUClient,
        terms: SourceTerms,
        strategy: DeliveryStrategy,
        writer: ResultsWriter,
        ledger: Ledger,
        limits: Limits,
        *,
        key: str,
        book: ReputationBook | None = None,
        resume: bool = False,
        progress: Callable[[int], None] | None = None,
        provider_reports: bool = True,
        cache: ResultCache | None = None,
    ) -> None:
        self.client, self.terms, self.strategy, self.writer, self.ledger = client, terms, strategy, writer, ledger
        self.limits, self.key, self.progress = limits, key, progress
        self.cache = cache  # inputs answered before are written from it, never published
        self.chain_id = client.chain.network.chain_id
        # On resume, what earlier runs published (config URL -> task): reused, never re-published.
        self.existing: dict[str, OnChainTask] = {}
        if resume:
            found = find_published(client.chain, client.address, terms.address, ledger.record.from_block)
            self.existing = {url: tasks[0] for url, tasks in found.items()}
        self.waiter = Waiter(
            client,
            [],
            strategy,
            from_block=client.chain.block_number(),
            poll_interval=limits.poll_interval,
            on_change=self._on_change,
            reputation=book,
            failures=from_prefect_events(self.chain_id, time.time() - 5) if provider_reports else None,
        )
        self.inflight: dict[str, Entry] = {}
        self.retry: deque[Entry] = deque()
        self.held = 0
        self.held_peak = 0
        self.escrow = EscrowReport()
        self.held_back: dict[str, int] = {}  # failed tasks whose escrow is still held -> expiry
        self.unreadable: set[str] = set()  # of those, the ones the node could not settle yet
        self.done = 0
        self.finalized = writer.manifest.get("counts", {}).get("finalized", 0)  # earlier runs' count
        self.first_published = 0  # inputs published for the first time
        self.first_failures: list[TaskResult] = []  # their failures, while nothing has finalized
        self.stopped: str | None = None  # why no more inputs are published

    def _on_change(self, kind: str, t: Tracked) -> None:
        if kind in ("decided", "failed", "expired"):
            from .tasks import task_event

            emit_task_event(*task_event(self.chain_id, t))

    def run(self, items: Iterator[tuple[int, TaskInput]]) -> None:
        exhausted = False
        last_resettle = time.monotonic()
        try:
            while True:
                if self.stopped is not None:
                    if not self.inflight:
                        break
                elif self._out_of_time():
                    exhausted = self._close_inputs(items, exhausted)
                elif not exhausted or self.retry:
                    exhausted = self._refill(items, exhausted)
                if exhausted and not self.inflight and not self.retry:
                    break
                ended = self.waiter.poll()
                if ended:
                    self._ended(ended)
                if self.held_back and time.monotonic() - last_resettle >= RESETTLE_S:
                    last_resettle = time.monotonic()
                    self._resettle()
                    if not self.inflight:
                        self._check_stalled()
                if not ended:
                    time.sleep(self.limits.poll_interval)
            if self.held_back:
                self._resettle()
        finally:
            self.waiter.close()

    # ---- publishing ----

    def _out_of_time(self) -> bool:
        d = self.limits.deadline
        return d is not None and time.time() >= d - MIN_TTL

    def _refill(self, items: Iterator[tuple[int, TaskInput]], exhausted: bool) -> bool:
        free = self.limits.slots - len(self.inflight)
        if self.limits.budget is not None and self.limits.payment:
            free = min(free, (self.limits.budget - self.held) // self.limits.payment)
        if free <= 0 or (self.inflight and free < max(1, self.limits.slots // REFILL_FRACTION)):
            return exhausted
        batch: list[Entry] = []
        while len(batch) < free and self.retry:
            batch.append(self.retry.popleft())
        while len(batch) < free and not exhausted:
            nxt = next(items, None)
            if nxt is None:
                exhausted = True
            elif nxt is NOTHING_YET:
                break
            elif self.cache is None or not self._from_cache(Entry(*nxt)):
                batch.append(Entry(*nxt))
        if batch:
            self._publish(batch)
        return exhausted

    def _publish(self, batch: list[Entry]) -> None:
        from .tasks import batch_marks

        chain, lim = self.client.chain, self.limits
        ttl = lim.task_timeout
        if lim.deadline is not None:
            ttl = int(min(ttl, max(lim.deadline - time.time(), MIN_TTL)))
        expiry = chain.now() + ttl
        marks = [m for e in batch for m in batch_marks(self.key, [e.index], e.attempt)]
        try:
            published = self.client.publish_tasks(
                self.terms,
                [e.item for e in batch],
                lim.payment,
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
        self.held += lim.payment * len(published)
        self.held_peak = max(self.held_peak, self.held)
        self.waiter.add([p for p in published if p.address not in reused])
        if reused:
            self.waiter.add([p for p in published if p.address in reused], catch_up=True)

    def _from_cache(self, e: Entry) -> bool:
        """Writes an input's stored result when the cache has one (result_cache.py)."""
        hit, value = self.cache.get(e.item) if self.cache is not None else (False, None)
        if hit:
            self._write(cached_result(e.index, value))
        return hit

    def _close_inputs(self, items: Iterator[tuple[int, TaskInput]], exhausted: bool) -> bool:
        """Past the deadline: what was never published (or waits to be again) ends as `deadline`."""
        while self.retry:
            e = self.retry.popleft()
            self._write(self._final(e, "deadline", "the batch deadline passed before it could be re-published"))
        if not exhausted:
            for i, item in items:
                self._write(
                    self._final(Entry(i, item), "deadline", "the batch deadline passed before it was published")
                )
        return True

    # ---- results ----

    def _ended(self, ended: list[Tracked]) -> None:
        from .tasks import result_of

        failed: list[tuple[Entry, TaskResult]] = []
        for t in ended:
            address = t.published.address
            e = self.inflight.pop(address)
            self.waiter.forget(address)
            r = result_of(t).model_copy(update={"tasks": list(e.tasks), "republished": e.attempt})
            if r.status == "finalized":
                if self.cache is not None:
                    self.cache.fill(e.item, r.result)
                self.ledger.drop([address])
                self.held -= self.limits.payment
                self.finalized += 1
                self._write(r)
            else:
                failed.append((e, r))
        if not failed:
            return
        report = self.ledger.settle([e.tasks[-1] for e, _ in failed])
        self._account(report)
        self._stop_if_all_fail([r for e, r in failed if e.attempt == 0])
        for e, r in failed:
            if e.attempt < self.limits.max_republish and not self._out_of_time() and self.stopped is None:
                self.retry.append(Entry(e.index, e.item, e.attempt + 1, e.tasks))
            else:
                self._write(
                    r.model_copy(update={"open_escrow": {t: self.held_back[t] for t in e.tasks if t in self.held_back}})
                )

    def _stop_if_all_fail(self, failed: list[TaskResult]) -> None:
        """Nothing finalized yet and a whole first window (every input published so far, at most
        `slots`) failed one visible way: republishing would pay for the same failure again."""
        if self.stopped is not None or self.finalized:
            return
        self.first_failures.extend(failed)
        if len(self.first_failures) >= min(self.limits.slots, self.first_published):
            self.stopped = same_failure(self.first_failures)
            if self.stopped is not None:
                log.error("every input failed the same way; publishing no more: %s", self.stopped)

    def _account(self, report: EscrowReport) -> None:
        """Escrow that came back (or was paid) stops counting against the budget."""
        self.escrow.merge(report)
        released = [*report.cancelled, *report.reclaimed, *report.finalized]
        for t in released:
            self.held_back.pop(t, None)
        self.held -= self.limits.payment * len(released)
        self.held_back.update(report.waiting)
        # Not readable now (the node failed): settled again at the next resettle, still counted.
        self.held_back.update({t: 0 for t in report.unreadable})
        self.unreadable = (self.unreadable | set(report.unreadable)) - {*released, *report.waiting}
        self.ledger.drop(released)

    def _resettle(self) -> None:
        now = self.client.chain.now()
        due = [t for t, expiry in self.held_back.items() if expiry <= now]
        if due:
            self._account(self.ledger.settle(due))

    def _check_stalled(self) -> None:
        """Nothing in flight, and the budget held by failed tasks whose escrow has not come back
        long after their expiry (a network that returns it late, or never): stop, saying so."""
        room = (self.limits.budget - self.held) if self.limits.budget is not None else None
        if room is None or room >= self.limits.payment:
            return
        if self.client.chain.now() < max(self.held_back.values()) + STALL_S:
            return
        raise EscrowHeldError(
            f"the budget is held by {len(self.held_back)} failed task(s) whose escrow has not come back "
            f"{STALL_S}s after their expiry; nothing more can be published (a run with the same batch_key "
            f"resumes once it is back)",
            list(self.held_back),
        )

    def _final(self, e: Entry, status: str, error: str) -> TaskResult:
        return TaskResult(
            index=e.index, status=status, tasks=list(e.tasks), republished=e.attempt, error=error, reason=status
        )

    def _write(self, r: TaskResult) -> None:
        self.writer.add(r)
        self.done += 1
        if self.progress is not None:
            self.progress(self.done)

    def summary(self, started: float) -> StreamSummary:
        return summarize(
            self.writer,
            self.key,
            started,
            held_peak=self.held_peak,
            escrow_held=self.limits.payment * len(self.held_back),
        )


def summarize(
    writer: ResultsWriter, key: str, started: float, *, held_peak: int | None = None, escrow_held: int = 0
) -> StreamSummary:
    """The summary of a batch from its manifest (and, while it runs, what only the loop knows)."""
    m = writer.manifest
    return StreamSummary(
        batch_key=key,
        inputs=sum(m["counts"].values()),
        counts=dict(m["counts"]),
        paid_wei=int(m.get("paid_wei", "0")),
        held_peak_wei=held_peak if held_peak is not None else int(m.get("held_peak_wei", "0")),
        escrow_held_wei=escrow_held,
        results_url=writer.url,
        manifest_url=writer.manifest_url,
        parts=writer.part_urls,
        wall_s=round(time.time() - started, 1),
    )


__all__ = ["Entry", "Limits", "Stream", "StreamSummary", "summarize"]
