"""The client's lifecycle events and their backlog. The events go through Prefect's real
EventsWorker; the client it sends with is Prefect's own test client (AssertingEventsClient), made
slow or stuck here: a server that falls behind, or one that went away, cannot be made on demand."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from ogpu_prefect.events import MAX_BACKLOG, emit_task_event, wait_for_backlog

TASK = "0x" + "ab" * 20
SOURCE = "0x" + "cd" * 20


@pytest.fixture
def slow_worker(prefect_harness: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """An EventsWorker whose client takes 1 ms per event, and may be stopped cold (`stuck`)."""
    from prefect.events.clients import AssertingEventsClient
    from prefect.events.worker import EventsWorker

    stuck = threading.Event()
    sent: list[Any] = []

    async def slow_emit(self: Any, event: Any) -> None:
        while stuck.is_set():
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.001)
        sent.append(event)

    # Patched, not subclassed: emit_event drops events for client types it does not know.
    monkeypatch.setattr(AssertingEventsClient, "_emit", slow_emit)
    worker = EventsWorker.instance(AssertingEventsClient)
    monkeypatch.setattr(EventsWorker, "instance", lambda *args, **kwargs: worker)
    worker.stuck, worker.sent = stuck, sent  # type: ignore[attr-defined]
    yield worker
    stuck.clear()
    worker.drain()


def test_a_burst_of_events_is_held_at_the_backlog_limit_and_all_are_sent(slow_worker: Any) -> None:
    n = 3 * MAX_BACKLOG
    sizes = []
    for i in range(n):
        emit_task_event("published", TASK, SOURCE, {"index": i})
        sizes.append(slow_worker._queue.qsize())
    assert max(sizes) <= MAX_BACKLOG + 1  # without the wait, the queue grows to about n
    slow_worker.wait_until_empty()
    sent = [e for e in slow_worker.sent if e.event == "ogpu.task.published"]
    assert sorted(e.payload["index"] for e in sent) == list(range(n))


def test_a_stalled_sender_does_not_stop_the_batch(slow_worker: Any) -> None:
    slow_worker.stuck.set()
    for i in range(40):
        emit_task_event("published", TASK, SOURCE, {"index": i})
    t0 = time.monotonic()
    wait_for_backlog(limit=5, stall_s=0.3)
    assert time.monotonic() - t0 < 5  # gave up after 0.3 s without progress, not waiting for the sender
    slow_worker.stuck.clear()
    slow_worker.wait_until_empty()
    assert len([e for e in slow_worker.sent if e.event == "ogpu.task.published"]) == 40
