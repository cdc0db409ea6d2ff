"""Prefect events for OpenGPU, chosen for what an automation can act on (docs/production.md):

- a batch: `ogpu.batch.started`, `.progress` (every few seconds while it runs), `.completed`,
  `.failed`, resource `ogpu.<chain id>.batch.<key>`;
- a task of a batch: only its end, `ogpu.task.finalized` (provider, payment, result URL, latency)
  or `ogpu.task.failed` (reason), resource `ogpu.<chain id>.task.<address>`; publication, attempts
  and responses are on chain and in the batch's progress, not one event each;
- a provider: `ogpu.provider.task.responded` (earnings) / `.failed` / `.resumed`, and
  `ogpu.provider.service.started` / `.stopped`, resource `ogpu.<chain id>.provider.<address>`.

Every event is related to the flow run it happened in (flow, deployment, tags, read from
`prefect.runtime`), or, from a worker, to the worker, its work pool and the task's flow run.

Events are sent by this module's own sender (`EventSender`): a thread with Prefect's public events
client (`prefect.events.clients.get_events_client`) and a bounded queue. A burst fills the queue
and the emitting thread waits for room: back-pressure instead of an unbounded backlog in memory.
A sender that makes no progress for a while (the server went away) is not waited for: events are
then dropped and counted (`EventSender.dropped`), and the batch goes on.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import queue
import threading
import time
from collections.abc import Callable
from datetime import UTC
from typing import Any

from .prefect_api import in_caller_context

log = logging.getLogger(__name__)

BATCH_EVENTS = ("started", "progress", "completed", "failed")
TASK_EVENTS = ("finalized", "failed")
PROVIDER_EVENTS = ("responded", "failed", "resumed")
SERVICE_EVENTS = ("started", "stopped")
MAX_BACKLOG = 500
"""Events queued in this process before an emitter waits for the sender to catch up."""
STALL_S = 5.0
"""Seconds without progress after which the sender is considered gone (events are dropped)."""


def resource(chain_id: int, kind: str, key: str, role: str | None = None) -> dict[str, str]:
    """`ogpu.<chain id>.<kind>.<key>`: the same address on two chains is two resources."""
    found = {"prefect.resource.id": f"ogpu.{chain_id}.{kind}.{key.lower()}", "prefect.resource.name": key}
    if role:
        found["prefect.resource.role"] = role
    return found


_related_of_run: dict[str, list[dict[str, str]]] = {}


def run_context_related() -> list[dict[str, str]]:
    """The flow run this code runs in (and its deployment and tags), as related resources; none
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
    """Sends events from a thread of its own through Prefect's events client (see module doc)."""

    def __init__(
        self, backlog: int = MAX_BACKLOG, stall_s: float = STALL_S, client_factory: Callable[[], Any] | None = None
    ) -> None:
        self.client_factory = client_factory
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=backlog)
        self.stall_s = stall_s
        self.sent = 0
        self.dropped = 0
        self._progress_at = time.monotonic()
        # The thread runs in a copy of its creator's context: it sees the same Prefect settings.
        self._thread = threading.Thread(target=in_caller_context(self._run), name="ogpu-events", daemon=True)
        self._thread.start()

    def put(self, event: Any) -> None:
        """Queues `event`; waits while the queue is full and the sender progresses."""
        while True:
            try:
                self.queue.put_nowait(event)
                return
            except queue.Full:
                if time.monotonic() - self._progress_at > self.stall_s:
                    self.dropped += 1
                    if self.dropped == 1 or self.dropped % 1000 == 0:
                        log.warning("Prefect's events API is not taking events: %d dropped", self.dropped)
                    return
                time.sleep(0.005)

    def flush(self, timeout: float = 30.0) -> bool:
        """Waits until everything queued was sent (or `timeout`); True if it was."""
        deadline = time.monotonic() + timeout
        while self.queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.02)
        return not self.queue.unfinished_tasks

    def _run(self) -> None:
        asyncio.run(self._send_forever())

    async def _send_forever(self) -> None:
        from prefect.events.clients import get_events_client

        while True:
            try:
                async with (self.client_factory or get_events_client)() as client:
                    while True:
                        try:
                            event = self.queue.get_nowait()
                        except queue.Empty:  # polled: a blocking get would hold a thread at exit
                            await asyncio.sleep(0.02)
                            continue
                        try:
                            await client.emit(event)
                            self.sent += 1
                            self._progress_at = time.monotonic()
                        finally:
                            self.queue.task_done()
            except Exception as e:  # the server went away: reconnect after a pause
                log.debug("events sender reconnecting after: %s", e)
                await asyncio.sleep(1.0)


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
