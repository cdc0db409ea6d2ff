"""A worker's start: flow runs a killed predecessor left Running or Pending are executed again
(a task already answered is only recorded: `Provider.execute` asks the chain first); those whose
task left the chain, or that record a task another run records, are closed with the reason."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import anyio
from prefect.client.schemas.objects import FlowRun, StateType

from ..events import emit_provider_event
from .execution import TaskRuns
from .journal import FlowRunJournal
from .provider import Provider


async def resume_left_open(
    client: Any, deployment_id: UUID, provider: Provider, journal: FlowRunJournal, runs_: TaskRuns, logger: Any
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
            emit_provider_event("resumed", provider.address, p["task"], p["source"])
    if resumed:
        logger.info("resuming %d task(s) left open by an earlier worker", len(resumed))
    return done


def _publication(key: str | None) -> str:
    """The publishing tx hash in a flow run's idempotency key (`chain:provider:task:tx`), or ""."""
    parts = (key or "").split(":")
    return parts[3] if len(parts) == 4 and parts[3].startswith("0x") else ""
