"""Prefect events for OpenGPU lifecycle changes (`ogpu.task.published`, `.attempted`,
`.responded`, `.finalized`, `.expired`, `.failed`), so automations can react to them."""

from __future__ import annotations

import time
from typing import Any

TASK_EVENTS = ("published", "attempted", "responded", "finalized", "expired", "failed")


def task_resource(task: str) -> dict[str, str]:
    return {"prefect.resource.id": f"ogpu.task.{task.lower()}", "prefect.resource.name": task}


def provider_resource(provider: str) -> dict[str, str]:
    return {"prefect.resource.id": f"ogpu.provider.{provider.lower()}", "prefect.resource.name": provider}


def _related_source(source: str) -> dict[str, str]:
    return {"prefect.resource.id": f"ogpu.source.{source.lower()}", "prefect.resource.role": "source",
            "prefect.resource.name": source}


MAX_BACKLOG = 500
"""Events queued in this process beyond which `emit_task_event` waits for Prefect's sender to
catch up: 10,000 tasks decided in a few polls queued ~4,600 events at once (~25 MB)."""


def emit_task_event(kind: str, task: str, source: str, payload: dict[str, Any] | None = None) -> None:
    """Emits `ogpu.task.<kind>` about `task`, related to its source. Called from the batch's
    thread: it waits while the events queue is over MAX_BACKLOG (see `wait_for_backlog`)."""
    from prefect.events import emit_event

    wait_for_backlog()
    emit_event(
        event=f"ogpu.task.{kind}",
        resource=task_resource(task),
        related=[_related_source(source)],
        payload=payload or {},
    )


def wait_for_backlog(limit: int = MAX_BACKLOG, stall_s: float = 5.0) -> None:
    """Waits while Prefect's events queue in this process holds over `limit` events, unless the
    sender makes no progress for `stall_s` (a server that went away must not stop the batch).
    Prefect's own bound (`PREFECT_EVENTS_WORKER_MAX_QUEUE_SIZE`) drops events instead."""
    from prefect.events.worker import EventsWorker

    queues = [w._queue for w in list(EventsWorker._instances.values())
              if isinstance(w, EventsWorker) and hasattr(w, "_queue")]
    for q in queues:
        size, progress_at = q.qsize(), time.monotonic()
        while size > limit and time.monotonic() - progress_at < stall_s:
            time.sleep(0.02)
            now = q.qsize()
            if now < size:
                progress_at = time.monotonic()
            size = now


PROVIDER_EVENTS = ("attempted", "responded", "failed", "resumed")
SERVICE_EVENTS = ("started", "stopped")


def emit_service_event(kind: str, provider: str, source: str, payload: dict[str, Any] | None = None) -> None:
    """Emits `ogpu.provider.service.<kind>`: a provider's service for `source` started (it can take
    tasks at once) or stopped."""
    from prefect.events import emit_event

    emit_event(
        event=f"ogpu.provider.service.{kind}",
        resource=provider_resource(provider),
        related=[_related_source(source)],
        payload=payload or {},
    )


def emit_provider_event(kind: str, provider: str, task: str, source: str, payload: dict[str, Any] | None = None) -> None:
    """Emits `ogpu.provider.task.<kind>` about a provider's work on `task` (the worker's side of the
    lifecycle; the client side emits `ogpu.task.*`)."""
    from prefect.events import emit_event

    emit_event(
        event=f"ogpu.provider.task.{kind}",
        resource=provider_resource(provider),
        related=[{**task_resource(task), "prefect.resource.role": "task"},
                 _related_source(source)],
        payload=payload or {},
    )


def stored_events(prefix: str, since: float, resource_id: str | None = None) -> list[Any]:
    """Events named `prefix...` that the Prefect API stored since the wall-clock `since` (about
    `resource_id`, if given), newest first, at most 50 (the server's page)."""
    from datetime import datetime, timezone

    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventResourceFilter

    flt = EventFilter(  # made per call: its `until` defaults to the moment it is made
        occurred=EventOccurredFilter(since=datetime.fromtimestamp(since, timezone.utc)),
        event=EventNameFilter(prefix=[prefix]),
        resource=EventResourceFilter(id=[resource_id]) if resource_id else None)
    with get_client(sync_client=True) as c:
        return list(c.read_events(filter=flt, limit=50).events)
