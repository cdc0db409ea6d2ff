"""Each Prefect internal ogpu_prefect/prefect_compat.py relies on, checked against the installed
Prefect: a failure here names what a Prefect upgrade changed and where the package uses it. No
Prefect server: the classes and functions only."""

from __future__ import annotations

import asyncio
import inspect
from types import SimpleNamespace
from typing import Any

import pytest
from prefect import Flow
from prefect.exceptions import ParameterTypeError
from prefect.workers.base import BaseWorker

from ogpu_prefect import prefect_compat as compat
from ogpu_prefect.flowkit import RedactingFlow

UPGRADE = "Prefect changed an internal ogpu_prefect/prefect_compat.py relies on: "


def _worker() -> BaseWorker[Any, Any, Any]:
    from ogpu_prefect.worker.worker import OGPUProviderWorker

    return OGPUProviderWorker(work_pool_name="a-pool", work_queues=["q1"])


def test_the_scheduled_runs_hook_is_what_the_worker_polls_through() -> None:
    hook = getattr(BaseWorker, compat.SCHEDULED_RUNS, None)
    assert hook is not None and inspect.iscoroutinefunction(hook), (
        UPGRADE + f"BaseWorker.{compat.SCHEDULED_RUNS} is gone"
    )
    assert list(inspect.signature(hook).parameters) == ["self"], UPGRADE + f"{compat.SCHEDULED_RUNS}'s signature"
    poll = inspect.getsource(BaseWorker.get_and_submit_flow_runs)
    assert f"self.{compat.SCHEDULED_RUNS}()" in poll, UPGRADE + "get_and_submit_flow_runs no longer polls through it"


def test_own_runs_only_filters_what_the_base_class_found() -> None:
    mine, theirs = (
        SimpleNamespace(flow_run=SimpleNamespace(deployment_id=1)),
        SimpleNamespace(flow_run=SimpleNamespace(deployment_id=2)),
    )

    class Base:
        async def _get_scheduled_flow_runs(self) -> list[Any]:
            return [mine, theirs]

    class Worker(compat.OwnRunsOnly, Base):
        def owns_run(self, flow_run: Any) -> bool:
            return flow_run.deployment_id == 1

    assert asyncio.run(Worker()._get_scheduled_flow_runs()) == [mine]


def test_the_worker_attributes_are_there() -> None:
    worker = _worker()
    assert compat.work_pool_name(worker) == "a-pool", UPGRADE + f"BaseWorker.{compat.WORK_POOL_NAME}"
    compat.add_work_queue(worker, "q2")
    assert getattr(worker, compat.WORK_QUEUES) == {"q1", "q2"}, UPGRADE + f"BaseWorker.{compat.WORK_QUEUES}"
    assert hasattr(worker, compat.RUNS_TASK_GROUP), UPGRADE + f"BaseWorker.{compat.RUNS_TASK_GROUP}"
    with pytest.raises(RuntimeError, match="not set up"):  # created by BaseWorker.__aenter__ (setup)
        compat.runs_task_group(worker)
    assert f"self.{compat.RUNS_TASK_GROUP} = anyio.create_task_group()" in inspect.getsource(BaseWorker.setup), (
        UPGRADE + f"BaseWorker.setup no longer opens {compat.RUNS_TASK_GROUP}"
    )


def test_a_missing_internal_is_said_loudly() -> None:
    bare = SimpleNamespace()
    with pytest.raises(compat.PrefectInternalsChanged, match=compat.RUNS_TASK_GROUP):
        compat.runs_task_group(bare)  # type: ignore[arg-type]
    with pytest.raises(compat.PrefectInternalsChanged, match=compat.WORK_QUEUES):
        compat.add_work_queue(bare, "q")  # type: ignore[arg-type]


def _shout(word: str, times: int) -> str:
    return word * times


def test_with_options_builds_a_plain_flow_and_keep_flow_class_restores_ours() -> None:
    ours = RedactingFlow(fn=_shout, name="shout", run_tags=["a"])
    plain = Flow.with_options(ours, name="again")
    assert type(plain) is Flow, UPGRADE + "Flow.with_options now keeps the subclass: keep_flow_class can go"
    new = ours.with_options(name="again")
    assert type(new) is RedactingFlow and new.run_tags == ("a",) and new.name == "again"


def test_parameter_errors_come_from_the_pydantic_error_behind_parameter_type_error() -> None:
    f = Flow(fn=_shout, name="shout")
    with pytest.raises(ParameterTypeError) as caught:
        f.validate_parameters({"word": "x", "times": "many"})
    found = compat.parameter_errors(caught.value)
    assert found and found[0][0] == "times", UPGRADE + "ParameterTypeError no longer carries its ValidationError"
    assert "integer" in found[0][1]


def test_the_count_by_route_is_the_servers() -> None:
    from prefect.client.orchestration.routes import ServerRoutes

    routes = ServerRoutes.__args__  # type: ignore[attr-defined]
    assert compat.COUNT_BY_EVENT.rsplit("/", 1)[0] + "/{countable}" in routes, UPGRADE + "the events count-by route"
    from prefect.server.api.events import count_account_events

    assert "countable" in inspect.signature(count_account_events).parameters, UPGRADE + "count-by's parameters"


def test_a_saved_block_dumps_as_the_reference_a_form_stores() -> None:
    import uuid

    from ogpu_prefect.blocks import OGPUStorage

    block = OGPUStorage(write_url="file:///tmp/x")
    assert compat.block_reference(block) is None  # never saved
    doc = uuid.uuid4()
    block._block_document_id = doc  # what Block.save() sets (no server here)
    ref = {"$ref": {"block_document_id": str(doc)}}
    assert compat.block_reference(block) == ref
    assert block.model_dump(context={"serialize_blocks_as_references": True}) == ref, (
        UPGRADE + f"a block's reference is no longer its {compat.BLOCK_DOCUMENT_ID}"
    )


def test_draining_the_events_worker_drains_every_prefect_service() -> None:
    from prefect._internal.concurrency.services import QueueService, _QueueServiceBase
    from prefect.concurrency.services import (
        ConcurrencySlotAcquisitionService,
        ConcurrencySlotAcquisitionWithLeaseService,
    )
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for kind in (APILogWorker, ConcurrencySlotAcquisitionService, ConcurrencySlotAcquisitionWithLeaseService):
        assert issubclass(kind, _QueueServiceBase) and kind._instances is EventsWorker._instances, (
            UPGRADE + f"{kind.__name__} has a registry of its own: drain_services must drain it too"
        )
    handled: list[int] = []

    class Probe(QueueService[int]):
        async def _handle(self, item: int) -> None:
            await asyncio.sleep(0.02)
            handled.append(item)

    probe = Probe.instance()
    for i in range(3):
        probe.send(i)
    assert compat.drain_services(timeout=30)
    assert handled == [0, 1, 2], UPGRADE + "EventsWorker.drain_all no longer drains the other services"
    again = Probe.instance()  # the next use starts a new one (on the settings then current)
    assert again is not probe
    assert compat.drain_services(timeout=30)
