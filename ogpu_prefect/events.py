"""Prefect events for OpenGPU, chosen for what an automation can act on (docs/production.md):

- a batch: `ogpu.batch.started`, `.progress` (every few seconds while it runs), `.completed`,
  `.failed`, resource `ogpu.<chain id>.batch.<key>`;
- a task of a batch: only its end, `ogpu.task.finalized` (provider, payment, result URL, latency)
  or `ogpu.task.failed` (reason), resource `ogpu.<chain id>.task.<address>`; publication, attempts
  and responses are on chain and in the batch's progress, not one event each;
- a provider: `ogpu.provider.task.responded` (earnings) / `.failed` / `.resumed`, and
  `ogpu.provider.service.started` / `.stopped`, resource `ogpu.<chain id>.provider.<address>`.

Every event is related to the flow run it happened in (its flow, deployment and tags, read from
the run's context), or, from a worker, to the worker, its work pool, the task's flow run (its
deployment and flow) and its task run.

Events are sent by this module's own sender (`EventSender`), an `api_writer.ApiWriter`: `put`
appends the event to a spool on disk and returns at once; a thread posts the spool to the API's
`POST /events` route in batches (one request for up to 200 events), waits out a 429 for its
`Retry-After`, retries any other failure, and moves past a batch only once the server accepted it.
Nothing is dropped, the emitter never waits, and what a dead process left unsent is sent by the
next one (see api_writer.py). Prefect's websocket client was used before: an event it had written
to the socket counted as sent, and one the server had not read when the connection broke or the
process exited was lost without a trace (1 in ~2,000 in the 1,000-task runs).
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
from collections.abc import Callable
from datetime import UTC
from typing import Any

log = logging.getLogger(__name__)

BATCH_EVENTS = ("started", "progress", "completed", "failed")
TASK_EVENTS = ("finalized", "failed")
PROVIDER_EVENTS = ("responded", "failed", "resumed")
SERVICE_EVENTS = ("started", "stopped")


def resource(chain_id: int, kind: str, key: str, role: str | None = None) -> dict[str, str]:
    """`ogpu.<chain id>.<kind>.<key>`: the same address on two chains is two resources."""
    found = {"prefect.resource.id": f"ogpu.{chain_id}.{kind}.{key.lower()}", "prefect.resource.name": key}
    if role:
        found["prefect.resource.role"] = role
    return found


_related_of_run: dict[str, list[dict[str, str]]] = {}


def run_context_related() -> list[dict[str, str]]:
    """The flow run this code runs in (and its flow, deployment and tags), as related resources; none
    outside a flow run. Read once per flow run."""
    from prefect.runtime import deployment, flow_run

    run_id = flow_run.get_id()
    if not run_id:
        return []
    cached = _related_of_run.get(run_id)
    if cached is not None:
        return cached
    related = [
        {
            "prefect.resource.id": f"prefect.flow-run.{run_id}",
            "prefect.resource.role": "flow-run",
            "prefect.resource.name": str(flow_run.get_name() or ""),
        }
    ]
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    if ctx is not None and ctx.flow_run is not None:
        related.append(
            {
                "prefect.resource.id": f"prefect.flow.{ctx.flow_run.flow_id}",
                "prefect.resource.role": "flow",
                "prefect.resource.name": str(flow_run.get_flow_name() or ""),
            }
        )
    deployment_id = deployment.get_id()
    if deployment_id:
        related.append(
            {"prefect.resource.id": f"prefect.deployment.{deployment_id}", "prefect.resource.role": "deployment"}
        )
    related += [
        {"prefect.resource.id": f"prefect.tag.{tag}", "prefect.resource.role": "tag"}
        for tag in flow_run.get_tags() or ()
    ]
    if len(_related_of_run) > 64:
        _related_of_run.clear()
    _related_of_run[run_id] = related
    return related


class EventSender:
    """Sends events through an `ApiWriter` to `POST /events` (see module doc): `put` never waits
    and never drops; a 429 is waited out. `client_factory`: an events client (Prefect's
    `AssertingEventsClient` in tests) that each batch is emitted through instead."""

    def __init__(self, client_factory: Callable[[], Any] | None = None, directory: Any = None) -> None:
        from .api_writer import ApiWriter

        self.client_factory = client_factory
        self.writer = ApiWriter(
            "/events", post=self._emit_through_client if client_factory else None, directory=directory
        )

    def put(self, event: Any) -> None:
        self.writer.put(event.model_dump(mode="json"))

    def flush(self, timeout: float = 30.0) -> bool:
        """Waits until everything put was accepted (or `timeout`); True if it was."""
        return self.writer.flush(timeout)

    @property
    def sent(self) -> int:
        return self.writer.sent

    @property
    def dropped(self) -> int:
        return self.writer.dropped

    @property
    def unsent(self) -> int:
        return self.writer.unsent

    def _emit_through_client(self, route: str, docs: list[Any]) -> None:
        from prefect.events import Event

        async def emit_all() -> None:
            async with self.client_factory() as client:  # type: ignore[misc]
                for doc in docs:
                    await client.emit(Event.model_validate(doc))

        asyncio.run(emit_all())


_senders: dict[str, EventSender] = {}
_sender_lock = threading.Lock()


def sender(replace: EventSender | None = None) -> EventSender:
    """The event sender of the Prefect API this code talks to (the caller's settings: a test
    harness or a profile may point elsewhere than the environment), one per API, as Prefect's
    own EventsWorker; `replace` installs another (tests: one with Prefect's AssertingEventsClient)."""
    from prefect.settings import PREFECT_API_URL

    api = str(PREFECT_API_URL.value() or "")
    with _sender_lock:
        if replace is not None:
            _senders[api] = replace
        found = _senders.get(api)
        if found is None:
            found = _senders[api] = EventSender()
            atexit.register(found.flush, 10.0)  # what a finished flow emitted still reaches the server
        return found


def emit(event: str, resource: dict[str, str], related: list[dict[str, str]], payload: dict[str, Any]) -> None:
    """Builds a Prefect event (related to the current flow run, if any) and queues it."""
    from prefect.events import Event

    sender().put(Event(event=event, resource=resource, related=[*related, *run_context_related()], payload=payload))


def emit_batch_event(kind: str, chain_id: int, key: str, source: str, payload: dict[str, Any]) -> None:
    """`ogpu.batch.<kind>` (started, progress, completed, failed) about batch `key`."""
    emit(
        f"ogpu.batch.{kind}",
        resource(chain_id, "batch", key),
        [resource(chain_id, "source", source, "source")],
        payload,
    )


def emit_task_event(kind: str, chain_id: int, task: str, source: str, payload: dict[str, Any]) -> None:
    """`ogpu.task.<kind>` (finalized, failed) about one task of a batch, related to its source."""
    emit(
        f"ogpu.task.{kind}", resource(chain_id, "task", task), [resource(chain_id, "source", source, "source")], payload
    )


def emit_service_event(
    kind: str, chain_id: int, provider: str, source: str, related: list[dict[str, str]] | None = None
) -> None:
    """`ogpu.provider.service.<kind>`: a provider's service for `source` started (it can take
    tasks at once) or stopped."""
    emit(
        f"ogpu.provider.service.{kind}",
        resource(chain_id, "provider", provider),
        [resource(chain_id, "source", source, "source"), *(related or [])],
        {},
    )


def emit_provider_event(
    kind: str,
    chain_id: int,
    provider: str,
    task: str,
    source: str,
    payload: dict[str, Any],
    related: list[dict[str, str]] | None = None,
) -> None:
    """`ogpu.provider.task.<kind>` (responded, failed, resumed) about a provider's work on `task`."""
    emit(
        f"ogpu.provider.task.{kind}",
        resource(chain_id, "provider", provider),
        [resource(chain_id, "task", task, "task"), resource(chain_id, "source", source, "source"), *(related or [])],
        payload,
    )


def stored_events(
    prefix: str | None,
    since: float,
    resource_id: str | None = None,
    limit: int = 50,
    *,
    name: str | None = None,
    related: tuple[list[str], str] | None = None,
) -> list[Any]:
    """Events named `prefix...` (or exactly `name`) that the Prefect API stored since the
    wall-clock `since`, about `resource_id` and related to one of `related`'s ids in its role, if
    given; newest first, at most `limit` (one page). The package's one reader of stored events."""
    from datetime import datetime

    from prefect.client.orchestration import get_client
    from prefect.events.filters import (
        EventFilter,
        EventNameFilter,
        EventOccurredFilter,
        EventRelatedFilter,
        EventResourceFilter,
    )

    flt = EventFilter(  # made per call: its `until` defaults to the moment it is made
        occurred=EventOccurredFilter(since=datetime.fromtimestamp(since, UTC)),
        event=EventNameFilter(name=[name]) if name else EventNameFilter(prefix=[prefix or ""]),
        resource=EventResourceFilter(id=[resource_id]) if resource_id else None,
        related=EventRelatedFilter(id=related[0], role=[related[1]]) if related else None,
    )
    with get_client(sync_client=True) as c:
        return list(c.read_events(filter=flt, limit=limit).events)


def stored_counts(prefix: str, since: float) -> dict[str, int]:
    """How many events named `prefix...` the Prefect API stored since the wall-clock `since`, by
    name (its count-by route: no paging, whatever the number)."""
    from datetime import datetime

    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter

    from .prefect_compat import count_events_by_name

    flt = EventFilter(
        occurred=EventOccurredFilter(since=datetime.fromtimestamp(since, UTC)), event=EventNameFilter(prefix=[prefix])
    )
    with get_client(sync_client=True) as c:
        return count_events_by_name(c, flt)
