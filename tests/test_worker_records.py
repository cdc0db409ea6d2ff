"""What a provider's work looks like in Prefect with the default `records: tasks`: each OpenGPU
task a task run of its source's session flow run, started at its attempt's block time and ended at
its response's block time (read back from the API and compared with the chain's blocks), its
lines in its task run's logs, the session's table one artifact. A real `prefect worker start`
against Prefect's test harness server and the devnet; nothing is mocked."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from .test_worker import Fleet, flow_runs_of, reap

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _task_runs(flow_run_ids: list[Any]) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as c:
        return c.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=flow_run_ids)))


def _block_times(chain: Any, names: tuple[str, ...], from_block: int, provider: str) -> dict[str, float]:
    """task -> the timestamp of the block of its `names` event by `provider`."""
    found = [e for e in chain.cursor(list(names), from_block).poll() if e["provider"].lower() == provider.lower()]
    stamps = {b: float(chain.timestamp(b)) for b in {e.block_number for e in found}}
    return {e["task"].lower(): stamps[e.block_number] for e in found}


@pytest.fixture
def fleet(devnet, tmp_path: Path, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    import signal

    from ogpu_prefect.storage import LocalStore

    with LocalStore(tmp_path / "payloads") as store:
        f = Fleet(devnet, store, tmp_path, request.node.name.replace("_", "-")[:40])
        try:
            yield f
        finally:
            for role in list(f.procs):
                f.stop(role, signal.SIGKILL)
                reap(devnet.address(role))


def test_each_task_is_a_task_run_with_the_chains_attempt_and_response_times(fleet: Fleet) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, LogFilter, LogFilterTaskRunId

    source = fleet.publish_source()
    fleet.create_pool("gpus-records", [source], wallet_block=f"{fleet.name}-provider1", records="tasks")
    fleet.start_worker("gpus-records", "provider1")
    fleet.wait_registered(source, "provider1")
    provider = fleet.devnet.address("provider1")
    first = fleet.chain.block_number()
    tasks = [p.address.lower() for p in fleet.publish(source, [{"text": f"hello {i}"} for i in range(5)])]
    fleet.wait_final(tasks)
    attempted = _block_times(fleet.chain, ("Attempted",), first, provider)
    submitted = fleet.chain.cursor(["ResponseSubmitted"], first).poll()
    params = fleet.chain.read_many([fleet.chain.response(e["response"]).read.get_response_params() for e in submitted])
    responded = {
        p.task.lower(): float(fleet.chain.timestamp(e.block_number))
        for e, p in zip(submitted, params)
        if p.provider.lower() == provider.lower()
    }
    assert set(attempted) == set(responded) == set(tasks)

    deadline = time.time() + 60
    while True:  # the task run recorder writes them from the worker's events
        sessions = flow_runs_of("gpus-records")
        runs = _task_runs([r.id for r in sessions])
        if len([r for r in runs if r.state_type and r.state_type.value == "COMPLETED"]) == 5 or time.time() > deadline:
            break
        time.sleep(0.5)
    assert len(sessions) == 1 and "task" not in sessions[0].parameters, "one session run for the source"
    by_task = {r.dynamic_key: r for r in runs}
    assert set(by_task) == set(tasks), [r.name for r in runs]
    for task in tasks:
        run = by_task[task]
        assert run.state_type.value == "COMPLETED"
        assert abs(run.start_time.timestamp() - attempted[task]) <= 1.0, (run.start_time, attempted[task])
        assert abs(run.end_time.timestamp() - responded[task]) <= 1.0, (run.end_time, responded[task])

    with get_client(sync_client=True) as c:
        deadline = time.time() + 30
        while time.time() < deadline:  # logs reach the API in batches
            logs = c.read_logs(log_filter=LogFilter(task_run_id=LogFilterTaskRunId(any_=[r.id for r in runs])))
            if sum("[service] echo" in lg.message for lg in logs) == 5:
                break
            time.sleep(0.5)
    assert sum("[service] echo" in lg.message for lg in logs) == 5, [lg.message for lg in logs]
    assert len({lg.task_run_id for lg in logs}) == len(logs) == 5, "one coalesced record per task"

    from ogpu_prefect.chain.devnet import CHAIN_ID
    from ogpu_prefect.events import resource, stored_events

    provider_id = resource(CHAIN_ID, "provider", provider)["prefect.resource.id"]
    deadline = time.time() + 30

    def ours() -> list[object]:
        # This test's: a reverted devnet gives an earlier test's provider and tasks the same
        # addresses on the same session-wide server; this test's payloads are in its own store.
        found = stored_events(None, 0, provider_id, name="ogpu.provider.task.responded")
        return [e for e in found if str(e.payload.get("result_url", "")).startswith(fleet.store.base_url)]

    while len(responded_events := ours()) < 5:
        assert time.time() < deadline, len(responded_events)  # events reach the store through its pipeline
        time.sleep(0.5)
    session = sessions[0]
    for event in responded_events:  # each linked to its task run, and to its session run (that run's
        # deployment and flow) once that run exists: the first tasks of a session can end before it does
        related = {r.role: r.id for r in event.related}
        task = related["task"].rsplit(".", 1)[-1].lower()
        assert related["task-run"] == f"prefect.task-run.{by_task[task].id}", related
        if "flow-run" in related:
            assert related["flow-run"] == f"prefect.flow-run.{session.id}", related
            assert related["deployment"] == f"prefect.deployment.{session.deployment_id}", related
            assert related["flow"] == f"prefect.flow.{session.flow_id}", related

    fleet.stop("provider1")  # the session closes with its table
    with get_client(sync_client=True) as c:
        session = c.read_flow_run(sessions[0].id)
        artifacts = c.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[session.id]))
        )
    assert session.state_type.value == "COMPLETED", session.state
    assert len(artifacts) == 1 and all(t in artifacts[0].data.lower() for t in tasks)


def test_each_service_line_is_in_the_record_of_the_task_that_wrote_it(fleet: Fleet) -> None:
    """Three tasks running at once in one warm service, each printing a line of its own: each
    task run's log holds its own line and no other (the runner tags a handler's lines with its
    task; a line that named no task went to every running task of the source)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterTaskRunId

    source = fleet.publish_source()
    fleet.create_pool("gpus-lines", [source], wallet_block=f"{fleet.name}-provider1", records="tasks")
    fleet.start_worker("gpus-lines", "provider1")
    fleet.wait_registered(source, "provider1")
    seconds = [2.0, 2.5, 3.0]
    published = fleet.publish(source, [{"seconds": s} for s in seconds], function="sleep")
    line_of = {p.address.lower(): f"sleep: {s}s" for p, s in zip(published, seconds)}
    fleet.wait_final(list(line_of))
    deadline = time.time() + 60
    while True:
        runs = _task_runs([r.id for r in flow_runs_of("gpus-lines")])
        with get_client(sync_client=True) as c:
            logs = c.read_logs(log_filter=LogFilter(task_run_id=LogFilterTaskRunId(any_=[r.id for r in runs])))
        if sum("sleep: " in lg.message for lg in logs) >= 3 or time.time() > deadline:
            break
        time.sleep(0.5)
    task_of_run = {r.id: r.dynamic_key for r in runs}
    seen = {task_of_run[lg.task_run_id]: lg.message for lg in logs if "sleep: " in lg.message}
    assert set(seen) == set(line_of), seen
    for task, message in seen.items():  # its own line, and no other task's
        assert [line for line in line_of.values() if line in message] == [line_of[task]], (task, message)


def test_cancelling_a_session_run_cancels_its_running_tasks(fleet: Fleet) -> None:
    """The UI's Cancel on a session's flow run stops each task of it that is running: nothing is
    submitted for them, their task runs end Cancelled, the session run ends Cancelled."""
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelling

    from ogpu_prefect.chain.types import TaskStatus

    source = fleet.publish_source()
    fleet.create_pool("gpus-session-cancel", [source], wallet_block=f"{fleet.name}-provider2", records="tasks")
    fleet.start_worker("gpus-session-cancel", "provider2")
    fleet.wait_registered(source, "provider2")
    me = fleet.devnet.address("provider2")
    tasks = [p.address for p in fleet.publish(source, [{"seconds": 20}, {"seconds": 20}], function="sleep")]
    deadline = time.time() + 60
    while True:  # both attempted and recorded Running in the session
        sessions = flow_runs_of("gpus-session-cancel")
        runs = _task_runs([r.id for r in sessions])
        if len([r for r in runs if r.state_type and r.state_type.value == "RUNNING"]) == 2:
            break
        assert time.time() < deadline, ([r.state_type for r in runs], fleet.worker_log("provider2"))
        time.sleep(0.3)
    [session] = sessions
    with get_client(sync_client=True) as c:
        c.set_flow_run_state(session.id, Cancelling(message="cancelled by a user"))
    deadline = time.time() + 60
    while True:
        runs = _task_runs([session.id])
        with get_client(sync_client=True) as c:
            state = c.read_flow_run(session.id).state_type.value
        if state == "CANCELLED" and all(r.state_type.value == "CANCELLED" for r in runs):
            break
        assert time.time() < deadline, (state, [r.state_type for r in runs], fleet.worker_log("provider2"))
        time.sleep(0.3)
    for t in tasks:
        assert int(fleet.chain.task(t).response_of(me), 16) == 0, "nothing submitted for a cancelled task"
        assert fleet.chain.task(t).get_status() is TaskStatus.ATTEMPTED
