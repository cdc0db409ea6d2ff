"""Prefect events for OpenGPU lifecycle changes (`ogpu.task.published`, `.attempted`,
`.responded`, `.finalized`, `.expired`, `.failed`), so automations can react to them."""

from __future__ import annotations

from typing import Any

TASK_EVENTS = ("published", "attempted", "responded", "finalized", "expired", "failed")


def task_resource(task: str) -> dict[str, str]:
    return {"prefect.resource.id": f"ogpu.task.{task.lower()}", "prefect.resource.name": task}


def emit_task_event(kind: str, task: str, source: str, payload: dict[str, Any] | None = None) -> None:
    """Emits `ogpu.task.<kind>` about `task`, related to its source."""
    from prefect.events import emit_event

    emit_event(
        event=f"ogpu.task.{kind}",
        resource=task_resource(task),
        related=[{"prefect.resource.id": f"ogpu.source.{source.lower()}", "prefect.resource.role": "source",
                  "prefect.resource.name": source}],
        payload=payload or {},
    )


PROVIDER_EVENTS = ("attempted", "responded", "failed", "resumed")


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
