"""The lifecycle events' sender: back-pressure on a burst, and a server that went away. The events go
through our EventSender with Prefect's own test client (AssertingEventsClient), made slow or stuck
here: a server that falls behind, or one that went away, cannot be made on demand."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from ogpu_prefect import events
from ogpu_prefect.events import EventSender, emit_task_event

TASK = "0x" + "ab" * 20
SOURCE = "0x" + "cd" * 20


@pytest.fixture
def slow_sender(prefect_harness: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """An EventSender whose client takes 1 ms per event, and may be stopped cold (`stuck`)."""
    from prefect.events.clients import AssertingEventsClient

    stuck = threading.Event()
    sent: list[Any] = []

    async def slow_emit(self: Any, event: Any) -> None:
        while stuck.is_set():
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.001)
        sent.append(event)

    monkeypatch.setattr(AssertingEventsClient, "_emit", slow_emit)
    previous = dict(events._senders)
    sender = events.sender(replace=EventSender(backlog=50, stall_s=0.3, client_factory=AssertingEventsClient))
    sender.stuck, sender.sent_events = stuck, sent  # type: ignore[attr-defined]
    yield sender
    stuck.clear()
    sender.flush()
    events._senders.clear()
    events._senders.update(previous)


def test_a_burst_waits_for_room_and_every_event_is_sent(slow_sender: Any) -> None:
    n = 300
    sizes = []
    for i in range(n):
        emit_task_event("finalized", 31337, TASK, SOURCE, {"index": i})
        sizes.append(slow_sender.queue.qsize())
    assert max(sizes) <= 50  # bounded by the backlog: the emitter waited for room
    assert slow_sender.flush()
    sent = [e for e in slow_sender.sent_events if e.event == "ogpu.task.finalized"]
    assert sorted(e.payload["index"] for e in sent) == list(range(n))
    assert slow_sender.dropped == 0


def test_a_stalled_sender_does_not_stop_the_batch(slow_sender: Any) -> None:
    slow_sender.stuck.set()
    t0 = time.monotonic()
    for i in range(120):
        emit_task_event("finalized", 31337, TASK, SOURCE, {"index": i})
    assert time.monotonic() - t0 < 5  # gave up waiting once the sender made no progress
    assert slow_sender.dropped > 0, "events beyond the backlog are dropped, and counted"
    slow_sender.stuck.clear()
    assert slow_sender.flush()
    assert len(slow_sender.sent_events) + slow_sender.dropped == 120


def test_events_name_the_flow_run_they_happened_in(prefect_harness: None, events_sink: Any) -> None:
    from prefect import flow

    @flow(name="emits-one")
    def emits() -> str:
        from prefect.runtime import flow_run

        emit_task_event("finalized", 31337, TASK, SOURCE, {"index": 0})
        return str(flow_run.get_id())

    run_id = emits()
    [event] = [e for e in events_sink.events() if e.event == "ogpu.task.finalized"]
    assert event.resource.id == f"ogpu.31337.task.{TASK}", "the chain id is part of the resource id"
    related = {r.role: r.id for r in event.related}
    assert related["source"] == f"ogpu.31337.source.{SOURCE}"
    assert related["flow-run"] == f"prefect.flow-run.{run_id}"


def test_closing_the_progress_reporter_does_not_wait_out_its_pause(prefect_harness: None) -> None:
    """The reporter pauses `every_s` between updates; close() ended that pause by waiting for it (2 s
    added to every batch, most of a one-task batch's wall). Here the pause is an hour: the old
    close() gave up joining after 30 s and left the thread asleep."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterId

    from ogpu_prefect.batch_report import ProgressReporter

    @flow
    def batch() -> ProgressReporter:  # as in run_batch: the reporter belongs to the batch's flow run
        reporter = ProgressReporter(4, "test", chain_id=1, key="k", source="0xs", every_s=3600)
        reporter.set(1)
        deadline = time.monotonic() + 30
        while reporter._client is None and time.monotonic() < deadline:  # the first update went out: it pauses
            time.sleep(0.05)
        reporter.close()
        return reporter

    reporter = batch()
    assert not reporter._thread.is_alive()
    with get_client(sync_client=True) as c:
        [artifact] = c.read_artifacts(artifact_filter=ArtifactFilter(id=ArtifactFilterId(any_=[reporter.artifact_id])))
    assert artifact.data == 100.0, "the final update still goes out"
