"""A worker's start: its provider's deployment (one per provider in the pool, in the provider's
own work queue: two providers' workers in one pool never pick up each other's tasks); and the flow
runs a killed predecessor left Running or Pending, executed again
(a task already answered is only recorded: `Provider.execute` asks the chain first); those whose
task left the chain, or that record a task another run records, are closed with the reason."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import anyio
from prefect.client.schemas.objects import FlowRun, StateType

from .execution import TaskRuns
from .journal import FlowRunJournal
from .provider import Provider
from .task_records import TaskRunJournal

FLOW_NAME = "ogpu-provider-task"


async def ensure_deployment(client: Any, pool: str, queue: str, provider: str) -> tuple[UUID, UUID]:
    """(flow id, deployment id) of `provider`'s deployment in `pool`, made if missing."""
    from prefect.exceptions import ObjectAlreadyExists

    try:
        await client.create_work_queue(name=queue, work_pool_name=pool)
    except ObjectAlreadyExists:
        pass
    flow_id = await client.create_flow_from_name(FLOW_NAME)
    schema = {
        "type": "object",
        "properties": {
            "task": {"type": "string"},
            "source": {"type": "string"},
            "payment": {"type": "string", "description": "asked payment, in wei"},
        },
    }
    deployment_id = await client.create_deployment(
        flow_id=flow_id,
        name=provider,
        work_pool_name=pool,
        work_queue_name=queue,
        tags=["ogpu-provider"],
        description=f"OpenGPU tasks executed by provider {provider}",
        parameter_openapi_schema=schema,
    )
    return flow_id, deployment_id


async def resume_left_open(
    client: Any,
    deployment_id: UUID,
    provider: Provider,
    journal: FlowRunJournal | TaskRunJournal,
    runs_: TaskRuns,
    logger: Any,
) -> set[str]:
    """Flow runs a killed predecessor left Running or Pending are executed again: a task we
    already answered is only recorded (`Provider.execute` asks the chain first)."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterDeploymentId,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )

    flt = FlowRunFilter(
        deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id]),
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING, StateType.PENDING])),
    )
    runs: list[FlowRun] = []
    while True:  # 200: the server's page limit
        page = await client.read_flow_runs(flow_run_filter=flt, limit=200, offset=len(runs))
        runs += page
        if len(page) < 200:
            break
    sessions = [r for r in runs if "task" not in r.parameters]  # a session's run: its worker died
    if sessions:
        try:
            await journal.close_runs(
                [r.id for r in sessions], "CRASHED", "its worker stopped; tasks left open are executed again"
            )
        except Exception as e:  # the next start closes them
            logger.warning("could not close %d session run(s): %s", len(sessions), e)
    runs = [r for r in runs if "task" in r.parameters]
    if not runs:
        return set()
    pairs = [(r.parameters["task"], _publication(r.idempotency_key)) for r in runs]
    try:
        live = await anyio.to_thread.run_sync(lambda: provider.live_attempts(pairs))
    except Exception as e:  # resume them all: execute tells a lost task by its error
        logger.warning("could not check the %d left-open task(s) on chain (%s)", len(runs), e)
        live = [True] * len(runs)
    resumed, stale, twins, seen = [], [], [], set()
    for run, ok in zip(runs, live):
        task = run.parameters["task"].lower()
        if not ok:
            stale.append(run)
        elif task in seen:  # one run per task executes it
            twins.append(run)
        else:
            resumed.append(run)
            seen.add(task)
    closing = [
        (
            stale,
            "the task is not on this chain any more (reverted or reorganised), or this provider never attempted it",
        ),
        (twins, "another flow run of this deployment records this task"),
    ]
    for group, message in closing:
        if not group:
            continue
        logger.info("closing %d left-open flow run(s): %s", len(group), message)
        try:
            await journal.close_runs([r.id for r in group], "CANCELLED", message)
        except Exception as e:  # the next start closes them
            logger.warning("could not close %d flow run(s): %s", len(group), e)
    done = {r.parameters["task"].lower() for r in resumed}  # the first chain scan skips them
    for run in resumed:
        p = run.parameters
        if runs_.start(
            p["task"], p["source"], int(p.get("payment") or 0), run_id=run.id, note="resumed after a worker restart"
        ):
            runs_.event("resumed", p["task"], p["source"], {"note": "resumed after a worker restart"})
    if resumed:
        logger.info("resuming %d task(s) left open by an earlier worker", len(resumed))
    return done


def _publication(key: str | None) -> str:
    """The publishing tx hash in a flow run's idempotency key (`chain:provider:task:tx`), or ""."""
    parts = (key or "").split(":")
    return parts[3] if len(parts) == 4 and parts[3].startswith("0x") else ""
