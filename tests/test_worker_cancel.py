"""Provider-side cancellation reaches only its task: two tasks of one source run on one worker
(a real `prefect worker start` process, one warm service); a user cancels one task's flow run
through the Prefect API (its state set to Cancelling, as the UI's Cancel button does). That run
ends Cancelled without a response; the other task keeps running on the same service process,
which stays up until it answers, and is finalized and paid."""

from __future__ import annotations

import time
from typing import Any

import pytest

from ogpu_prefect.chain.types import TaskStatus

from . import test_worker
from .test_worker import PAY, Fleet, flow_runs_of, service_processes

pytestmark = pytest.mark.usefixtures("prefect_harness")
fleet = test_worker.fleet  # the fixture: a pool's blocks and its worker processes


def runs_by_task(pool: str) -> dict[str, Any]:
    return {r.parameters["task"]: r for r in flow_runs_of(pool)}


def test_cancelling_one_tasks_flow_run_leaves_the_other_task_and_the_service_running(fleet: Fleet) -> None:
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelling

    chain, me = fleet.chain, fleet.devnet.address("provider2")
    source = fleet.publish_source()
    fleet.create_pool("gpus-cancel", [source], wallet_block=f"{fleet.name}-provider2")
    fleet.start_worker("gpus-cancel", "provider2")
    fleet.wait_registered(source, "provider2")
    deadline = time.time() + 60
    while not service_processes(me):  # warm on start
        assert time.time() < deadline, fleet.worker_log("provider2")
        time.sleep(0.2)
    service = set(service_processes(me))
    earned = chain.vault.total_earnings_of(me)

    doomed, kept = [p.address for p in fleet.publish(source, [{"seconds": 8}, {"seconds": 8}], function="sleep")]
    deadline = time.time() + 60
    while True:  # both attempted, both runs recorded Running
        runs = runs_by_task("gpus-cancel")
        if all(t in runs and runs[t].state_type.value == "RUNNING" for t in (doomed, kept)):
            break
        assert time.time() < deadline, ({t: r.state_type for t, r in runs.items()}, fleet.worker_log("provider2"))
        time.sleep(0.2)
    assert chain.task(doomed).get_attempter_id(me) and chain.task(kept).get_attempter_id(me)

    with get_client(sync_client=True) as c:  # what the UI's Cancel does
        c.set_flow_run_state(runs[doomed].id, Cancelling(message="cancelled by a user"))

    cancelled_at = None
    deadline = time.time() + 60
    while chain.task(kept).get_status() is not TaskStatus.FINALIZED:
        assert set(service_processes(me)) == service, "the service stays up while the other task runs"
        if cancelled_at is None and runs_by_task("gpus-cancel")[doomed].state_type.value == "CANCELLED":
            cancelled_at = time.time()
        assert time.time() < deadline, fleet.worker_log("provider2")
        time.sleep(0.1)
    assert cancelled_at is not None, "the cancelled run ended before the other task answered"

    assert chain.task(kept).winning_provider() == me
    assert chain.vault.total_earnings_of(me) - earned == PAY, "the other task is paid"
    assert int(chain.task(doomed).response_of(me), 16) == 0, "no response for the cancelled task"
    assert chain.task(doomed).get_status() is TaskStatus.ATTEMPTED
    deadline = time.time() + 30
    while True:
        runs = runs_by_task("gpus-cancel")
        if runs[kept].state_type.value == "COMPLETED" or time.time() > deadline:
            break
        time.sleep(0.2)
    assert runs[kept].state_type.value == "COMPLETED", runs[kept].state
    assert runs[doomed].state_type.value == "CANCELLED", runs[doomed].state
    assert "its flow run was cancelled" in (runs[doomed].state.message or ""), runs[doomed].state
    assert set(service_processes(me)) == service, "still warm for the next task"

    # A task alone on the service: cancelling it stops the service too (its work is abandoned).
    alone = fleet.publish(source, [{"seconds": 30}], function="sleep")[0].address
    deadline = time.time() + 60
    while alone not in (runs := runs_by_task("gpus-cancel")) or runs[alone].state_type.value != "RUNNING":
        assert time.time() < deadline, fleet.worker_log("provider2")
        time.sleep(0.2)
    with get_client(sync_client=True) as c:
        c.set_flow_run_state(runs[alone].id, Cancelling(message="cancelled by a user"))
    deadline = time.time() + 30
    while service_processes(me) or runs_by_task("gpus-cancel")[alone].state_type.value != "CANCELLED":
        assert time.time() < deadline, (service_processes(me), fleet.worker_log("provider2"))
        time.sleep(0.2)
