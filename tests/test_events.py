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
def slow_sender(prefect_harness: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[Any]:
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
    sender = events.sender(replace=EventSender(client_factory=AssertingEventsClient, directory=tmp_path))
    sender.stuck, sender.sent_events = stuck, sent  # type: ignore[attr-defined]
    yield sender
    stuck.clear()
    sender.flush()
    events._senders.clear()
    events._senders.update(previous)


def test_a_burst_is_sent_whole(slow_sender: Any) -> None:
    n = 300
    for i in range(n):
        emit_task_event("finalized", 31337, TASK, SOURCE, {"index": i})
    assert slow_sender.flush()
    sent = [e for e in slow_sender.sent_events if e.event == "ogpu.task.finalized"]
    assert sorted(e.payload["index"] for e in sent) == list(range(n))
    assert slow_sender.dropped == 0


def test_a_stalled_sender_neither_stops_the_emitter_nor_loses_an_event(slow_sender: Any) -> None:
    """The emitter used to wait, then drop events, when the sender made no progress."""
    slow_sender.stuck.set()
    for i in range(120):  # returns while the sender is stuck: nothing waits for it
        emit_task_event("finalized", 31337, TASK, SOURCE, {"index": i})
    assert slow_sender.unsent > 0 and slow_sender.dropped == 0
    slow_sender.stuck.clear()
    assert slow_sender.flush()
    sent = [e for e in slow_sender.sent_events if e.event == "ogpu.task.finalized"]
    assert sorted({e.payload["index"] for e in sent}) == list(range(120))


def _put(sender: EventSender, name: str, n: int) -> None:
    from prefect.events import Event

    for i in range(n):
        sender.put(Event(event=name, resource={"prefect.resource.id": f"ogpu.test.{i}"}, payload={"i": i}))


def test_429_is_waited_out_for_its_retry_after_and_every_event_is_stored(prefect_harness: None, tmp_path: Any) -> None:
    """A real proxy answering 429 with Retry-After in front of the real Prefect server."""
    from prefect.settings import PREFECT_API_URL

    from ogpu_prefect.events import stored_counts

    from .prefect_env import api_at
    from .prefectproxy import PrefectProxy

    since = time.time() - 1
    with PrefectProxy(PREFECT_API_URL.value()) as proxy:
        proxy.refuse_next(4)
        with api_at(proxy.url):
            sender = EventSender(directory=tmp_path)
        _put(sender, "ogpu.test.limited", 250)
        assert sender.flush(60)
        metering = proxy.reset()
    assert sum(metering.refused.values()) == 4
    assert all(gap >= 0.95 for gap in metering.retry_gaps), metering.retry_gaps  # Retry-After: 1.0
    assert metering.requests["POST /api/events"] <= 2 + 4, "batched: a request per 200 events, plus the refused"
    deadline = time.time() + 30
    while stored_counts("ogpu.test.limited", since).get("ogpu.test.limited", 0) < 250 and time.time() < deadline:
        time.sleep(0.5)
    assert stored_counts("ogpu.test.limited", since) == {"ogpu.test.limited": 250}
    assert sender.dropped == 0


def test_what_a_killed_process_left_unsent_is_sent_by_the_next(prefect_harness: None, tmp_path: Any) -> None:
    """A process spools events the API refuses (429), is SIGKILLed; the next sender on the same
    spool folder (a restarted worker) sends them all. Real processes, proxy and server."""
    import os
    import signal
    import subprocess
    import sys

    from prefect.settings import PREFECT_API_URL

    from ogpu_prefect.events import stored_counts

    from .prefect_env import api_at
    from .prefectproxy import PrefectProxy

    script = (
        "import sys, time; from pathlib import Path; from ogpu_prefect.events import EventSender;"
        "from tests.test_events import _put; s = EventSender(directory=Path(sys.argv[1]));"
        "_put(s, 'ogpu.test.restart', 150); print('spooled', flush=True); time.sleep(600)"
    )
    since = time.time() - 1
    with PrefectProxy(PREFECT_API_URL.value()) as proxy:
        proxy.refuse_next(10**6)
        env = {**os.environ, "PREFECT_API_URL": proxy.url}
        proc = subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path)], env=env, stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == "spooled"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proxy.refuse_next(0)
        with api_at(proxy.url):
            sender = EventSender(directory=tmp_path)
        assert sender.flush(60)
        deadline = time.time() + 60
        while sender.writer._orphans and time.time() < deadline:
            time.sleep(0.2)
    deadline = time.time() + 30
    while stored_counts("ogpu.test.restart", since).get("ogpu.test.restart", 0) < 150 and time.time() < deadline:
        time.sleep(0.5)
    assert stored_counts("ogpu.test.restart", since) == {"ogpu.test.restart": 150}
    assert not list(tmp_path.glob("events-*.jsonl"))[1:], "the dead process' spool is removed once sent"


def test_events_name_the_flow_run_they_happened_in(prefect_harness: None, events_sink: Any) -> None:
    from prefect import flow

    @flow(name="emits-one")
    def emits() -> tuple[str, str]:
        from prefect.context import FlowRunContext
        from prefect.runtime import flow_run

        emit_task_event("finalized", 31337, TASK, SOURCE, {"index": 0})
        ctx = FlowRunContext.get()
        assert ctx is not None and ctx.flow_run is not None
        return str(flow_run.get_id()), str(ctx.flow_run.flow_id)

    run_id, flow_id = emits()
    [event] = [e for e in events_sink.events() if e.event == "ogpu.task.finalized"]
    assert event.resource.id == f"ogpu.31337.task.{TASK}", "the chain id is part of the resource id"
    related = {r.role: r.id for r in event.related}
    assert related["source"] == f"ogpu.31337.source.{SOURCE}"
    assert related["flow-run"] == f"prefect.flow-run.{run_id}"
    assert related["flow"] == f"prefect.flow.{flow_id}", "an automation can match the flow, as Prefect's own events"


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
