"""Prefect events for OpenGPU lifecycle changes (`ogpu.task.published`, `.attempted`,
`.responded`, `.finalized`, `.expired`, `.failed`), so automations can react to them."""

from __future__ import annotations

import time
from typing import Any

TASK_EVENTS = ("published", "attempted", "responded", "finalized", "expired", "failed")


def task_resource(task: str) -> dict[str, str]:
    return {"prefect.resource.id": f"ogpu.task.{task.lower()}", "prefect.resource.name": task}


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
        related=[{"prefect.resource.id": f"ogpu.source.{source.lower()}", "prefect.resource.role": "source",
                  "prefect.resource.name": source}],
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
        resource={"prefect.resource.id": f"ogpu.provider.{provider.lower()}", "prefect.resource.name": provider},
        related=[{"prefect.resource.id": f"ogpu.source.{source.lower()}", "prefect.resource.role": "source",
                  "prefect.resource.name": source}],
        payload=payload or {},
    )


def emit_provider_event(kind: str, provider: str, task: str, source: str, payload: dict[str, Any] | None = None) -> None:
    """Emits `ogpu.provider.task.<kind>` about a provider's work on `task` (the worker's side of the
    lifecycle; the client side emits `ogpu.task.*`)."""
    from prefect.events import emit_event

    emit_event(
        event=f"ogpu.provider.task.{kind}",
        resource={"prefect.resource.id": f"ogpu.provider.{provider.lower()}", "prefect.resource.name": provider},
        related=[{**task_resource(task), "prefect.resource.role": "task"},
                 {"prefect.resource.id": f"ogpu.source.{source.lower()}", "prefect.resource.role": "source",
                  "prefect.resource.name": source}],
        payload=payload or {},
    )
