"""Cancelling a batch from the UI: a served run_batch (the runner of `python flows/run_batch.py`,
against the session's Prefect server and devnet) publishes its tasks on a source nobody serves;
the run is cancelled the way the UI does it (state Cancelling through the API). Its escrow comes
back on chain, and the run's own logs say what was settled (the line used to go only to the
runner's stdout, where a UI user never sees it)."""

from __future__ import annotations

import sys
import time
from typing import Any

import pytest

from ogpu_prefect.chain.contracts import TaskStatus
from ogpu_prefect.reconcile import find_published

from .test_deploy import INPUTS, World, wait_deployments, wait_runs, world  # noqa: F401 (the fixture)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def run_logs(run_id: Any) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])), limit=200)
    return [log.message for log in logs]


def test_a_batch_cancelled_from_the_ui_settles_and_says_so_in_its_own_log(world: World) -> None:  # noqa: F811
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.states import Cancelling

    net, wallet, storage = world.blocks
    ctx, client = world.ctx, world.ctx.devnet.address("client")
    start = ctx.chain.block_number()
    world.procs.services = ("serve-run-batch",)
    world.procs.start("serve-run-batch", [sys.executable, "flows/run_batch.py"])
    deployments = wait_deployments(world, ["ogpu-run-batch/run-batch"])
    try:
        run = run_deployment(
            "ogpu-run-batch/run-batch",
            parameters={
                "source": world.source,
                "inputs": INPUTS,
                "payment": "0.01 OGPU",
                "network": net,
                "wallet": wallet,
                "storage": storage,
                "function_name": "echo",
                "task_timeout": 600,
            },
            timeout=0,
        )
        deadline = time.time() + 240
        while sum(len(ts) for ts in find_published(ctx.chain, client, world.source, start).values()) < len(INPUTS):
            world.procs.alive()
            assert time.time() < deadline, f"the batch did not publish:\n{world.procs.tail()}"
            time.sleep(1)
        with get_client(sync_client=True) as api:
            api.set_flow_run_state(run.id, Cancelling(message="cancelled from the UI"), force=True)
        (ended,) = wait_runs(world, [run.id], timeout=240)
    finally:
        with get_client(sync_client=True) as api:
            for d in deployments.values():
                api.delete_deployment(d.id)
    assert ended.state.is_cancelled(), f"{ended.state}\n{world.procs.tail()}"
    tasks = [t for ts in find_published(ctx.chain, client, world.source, start).values() for t in ts]
    statuses = ctx.chain.read_many([ctx.chain.task(t.address).read.get_status() for t in tasks])
    assert [TaskStatus(s) for s in statuses] == [TaskStatus.CANCELED] * len(INPUTS), "escrow back on chain"
    deadline = time.time() + 30  # the runner's logs reach the API in batches
    while True:
        logs = run_logs(run.id)
        if any("escrow settled" in line for line in logs):
            break
        assert time.time() < deadline, "the run's own log does not say what was settled:\n" + "\n".join(logs[-20:])
        time.sleep(1)
    settled = next(line for line in logs if "escrow settled" in line)
    assert f"cancelling; escrow settled: 0 finalized, {len(INPUTS)} cancelled (refunded)" in settled, settled
