"""Every use of a Prefect internal, in one place: what Prefect 3.9 has no public API for. Elsewhere
the package uses only Prefect's public API. tests/unit/test_prefect_compat.py checks each item below
against the installed Prefect (a name, a signature, a behaviour) and fails naming the item when an
upgrade changes it; read this module first when moving the pin.

- `OwnRunsOnly`: a worker that submits only some of its queues' scheduled runs overrides
  `BaseWorker._get_scheduled_flow_runs` (no public filter or hook between polling and submitting).
- `runs_task_group`, `add_work_queue`, `work_pool_name`: the worker's task group for its runs
  (`_runs_task_group`), its set of queue names (`_work_queues`: a queue named only once the worker
  is set up), and the pool's name it was given (`_work_pool_name`: also before the pool is read).
- `keep_flow_class`: `Flow.with_options` builds a plain `Flow`, whatever the subclass.
- `parameter_errors`: `Flow.validate_parameters` raises `ParameterTypeError` with only a text; the
  pydantic `ValidationError` it came from is its `__context__`.
- `count_events_by_name`: the server's `/events/count-by/event` route has no client method.
- `block_reference`: a saved block as the `{"$ref": {"block_document_id": ...}}` a form or a
  deployment stores: the id is `Block._block_document_id` (named in Block's docstring; no public
  accessor), as Prefect's own serializer writes it for `serialize_blocks_as_references`.
- `drain_services`: Prefect's process-wide services (events, API logs, concurrency slots) share
  one registry (`_QueueServiceBase._instances`), so `drain_all` of one class drains them all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import anyio.abc
    from prefect import Flow
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.events.filters import EventFilter
    from prefect.workers.base import BaseWorker

F = TypeVar("F", bound="Flow[Any, Any]")

SCHEDULED_RUNS = "_get_scheduled_flow_runs"
RUNS_TASK_GROUP = "_runs_task_group"
WORK_QUEUES = "_work_queues"
WORK_POOL_NAME = "_work_pool_name"
COUNT_BY_EVENT = "/events/count-by/event"
BLOCK_DOCUMENT_ID = "_block_document_id"


class PrefectInternalsChanged(RuntimeError):
    """An internal of Prefect this package relies on is not what it was (prefect_compat.py)."""


class OwnRunsOnly:
    """Mixin before `BaseWorker`: of the scheduled runs a poll finds on the worker's queues, only
    those `owns_run(flow_run)` accepts are submitted (a pool may hold other workers' queues)."""

    def owns_run(self, flow_run: Any) -> bool:
        raise NotImplementedError

    async def _get_scheduled_flow_runs(self) -> list[Any]:
        runs = await super()._get_scheduled_flow_runs()  # type: ignore[misc]
        return [r for r in runs if self.owns_run(r.flow_run)]


def runs_task_group(worker: BaseWorker) -> anyio.abc.TaskGroup:
    """The task group the worker runs its flow runs in (open between setup and teardown)."""
    group = getattr(worker, RUNS_TASK_GROUP, _MISSING)
    if group is _MISSING:
        raise PrefectInternalsChanged(f"BaseWorker has no {RUNS_TASK_GROUP} (prefect_compat.runs_task_group)")
    if group is None:
        raise RuntimeError("the worker is not set up: its runs' task group is not open")
    return group  # type: ignore[no-any-return]


def add_work_queue(worker: BaseWorker, name: str) -> None:
    """The worker polls the queue `name` too (a queue named after something known only once the
    worker is set up, as a provider's address)."""
    queues = getattr(worker, WORK_QUEUES, None)
    if not isinstance(queues, set):
        raise PrefectInternalsChanged(f"BaseWorker.{WORK_QUEUES} is not a set of names (prefect_compat.add_work_queue)")
    queues.add(name)


def work_pool_name(worker: BaseWorker) -> str:
    """The name of the pool the worker was started for (known before the pool is read)."""
    name = getattr(worker, WORK_POOL_NAME, None)
    if not isinstance(name, str):
        raise PrefectInternalsChanged(f"BaseWorker.{WORK_POOL_NAME} is not a name (prefect_compat.work_pool_name)")
    return name


def keep_flow_class(new: Flow[Any, Any], like: F) -> F:
    """`new` (what `Flow.with_options` returned for `like`) as an instance of `like`'s class, with
    the attributes that class adds."""
    extra = {k: v for k, v in vars(like).items() if k not in vars(new)}
    new.__class__ = type(like)
    vars(new).update(extra)
    return new  # type: ignore[return-value]


def parameter_errors(error: Exception) -> list[tuple[str, str]]:
    """(parameter, message) for each parameter a `ParameterTypeError` refused, from the pydantic
    error it was raised from; [] when it carries none."""
    from pydantic import ValidationError

    cause = error.__context__
    if not isinstance(cause, ValidationError):
        return []
    return [(str(e["loc"][0]) if e["loc"] else "parameters", str(e["msg"])) for e in cause.errors()]


def count_events_by_name(client: SyncPrefectClient, flt: EventFilter) -> dict[str, int]:
    """How many stored events match `flt`, by event name (the server counts: no paging)."""
    reply = client.request("POST", COUNT_BY_EVENT, json={"filter": flt.model_dump(mode="json")})  # type: ignore[arg-type]
    return {row["value"]: int(row["count"]) for row in reply.json()}


def block_reference(block: Any) -> dict[str, Any] | None:
    """`{"$ref": {"block_document_id": "..."}}` for a saved block; None for one never saved."""
    doc = getattr(block, BLOCK_DOCUMENT_ID, _MISSING)
    if doc is _MISSING:
        raise PrefectInternalsChanged(f"Block has no {BLOCK_DOCUMENT_ID} (prefect_compat.block_reference)")
    return None if doc is None else {"$ref": {"block_document_id": str(doc)}}


def drain_services(timeout: float) -> bool:
    """Stops every Prefect service of this process (events, API logs, concurrency slots) once
    what each holds is sent, waiting up to `timeout` s; True if all of them finished. Each talks to
    the API of the settings current when it started, for as long as it runs (Prefect keys them
    without the API URL): code that leaves an API this process used (a `temporary_settings` URL
    whose server stops) drains them first, and the next use starts them on the API then current.
    From synchronous code only."""
    import asyncio

    from prefect.events.worker import EventsWorker

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError("drain_services is for synchronous code (an event loop is running here)")
    _, unfinished = EventsWorker.drain_all(timeout=timeout)  # all services: one registry (module doc)
    return not unfinished


_MISSING = object()
