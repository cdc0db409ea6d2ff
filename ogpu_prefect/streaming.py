"""Streaming batches: any number of inputs with at most `max_in_flight` tasks on chain at once.

Inputs are taken one at a time (stream_io.py), published a chunk at a time as earlier tasks end,
and every result is written to storage as it ends, so memory follows `max_in_flight`, not the
number of inputs. Escrow never exceeds `budget`: a task counts from its publication until its
escrow is paid out or back (finalized, cancelled, reclaimed); one still held after it failed keeps
counting until a later settling finds it returned.

The loop and its money are the batch engine's (engine/window.py, engine/book.py); this module
fills its ports with the real client, a Waiter (with Prefect events) and the results writer.

Crash-safe like run_batch (batch.py): the batch's record is saved before the first transaction,
the results manifest is its checkpoint, every task config carries (batch, input, attempt) marks,
and a resumed run reuses the tasks an earlier run published for the inputs it had not finished
(their config URLs are the same), reading their state from the chain instead of publishing again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from .batch import Ledger
from .engine.window import NOTHING_YET, Answers, Entry, Limits, Window
from .events import emit_task_event
from .models import PublishedTask, TaskInput, TaskResult
from .provider_failures import from_prefect_events
from .reconcile import OnChainTask, find_published
from .stream_io import ResultsWriter
from .waiting import Tracked, Waiter

if TYPE_CHECKING:
    from .client import OGPUClient, SourceTerms
    from .delivery import DeliveryStrategy
    from .reputation import ReputationBook


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


class ClientMarket:
    """The engine's Market over a real client and one source."""

    def __init__(self, client: OGPUClient, terms: SourceTerms) -> None:
        self.client, self.terms = client, terms

    def now(self) -> int:
        return self.client.chain.now()

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
        return self.client.publish_tasks(
            self.terms, items, payment, expiry, marks=marks, indexes=indexes, existing=existing
        )


class WaiterTracker:
    """The engine's Tracker over a Waiter: a result per ended task, and its Prefect event."""

    def __init__(self, waiter: Waiter) -> None:
        self.waiter = waiter

    def add(self, published: Sequence[PublishedTask], *, catch_up: bool = False) -> None:
        self.waiter.add(published, catch_up=catch_up)

    def poll(self) -> list[TaskResult]:
        from .tasks import result_of

        ended = self.waiter.poll()
        for t in ended:
            self.waiter.forget(t.published.address)
        return [result_of(t) for t in ended]

    def close(self) -> None:
        self.waiter.close()


class Stream(Window):
    """One streaming batch (see module doc): the engine's Window over the client, a Waiter, the
    batch's Ledger and its ResultsWriter; `run` returns when every input has a result."""

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
        cache: Answers | None = None,
    ) -> None:
        self.client, self.writer, self.progress = client, writer, progress
        self.chain_id = client.chain.network.chain_id
        # On resume, what earlier runs published (config URL -> task): reused, never re-published.
        existing: dict[str, OnChainTask] = {}
        if resume:
            found = find_published(client.chain, client.address, terms.address, ledger.record.from_block)
            existing = {url: tasks[0] for url, tasks in found.items()}
        waiter = Waiter(
            client,
            [],
            strategy,
            from_block=client.chain.block_number(),
            poll_interval=limits.poll_interval,
            on_change=self._on_change,
            reputation=book,
            failures=from_prefect_events(self.chain_id, time.time() - 5) if provider_reports else None,
        )
        super().__init__(
            ClientMarket(client, terms),
            WaiterTracker(waiter),
            ledger,
            limits,
            self._written,
            key=key,
            existing=existing,
            finalized_before=writer.manifest.get("counts", {}).get("finalized", 0),
            cache=cache,
        )

    def _on_change(self, kind: str, t: Tracked) -> None:
        if kind in ("decided", "failed", "expired"):
            from .tasks import task_event

            emit_task_event(*task_event(self.chain_id, t))

    def _written(self, r: TaskResult) -> None:
        self.writer.add(r)
        if self.progress is not None:
            self.progress(self.done + 1)  # the engine counts it once this returns

    def summary(self, started: float) -> StreamSummary:
        return summarize(
            self.writer,
            self.key,
            started,
            held_peak=self.held_peak,
            escrow_held=self.book.held_back_wei,
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


__all__ = ["NOTHING_YET", "Entry", "Limits", "Stream", "StreamSummary", "summarize"]
