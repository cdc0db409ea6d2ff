"""The `prefect.task-run.*` events that record a provider's task as a Prefect task run with the
chain's times (task_records.py), and the chain reads that give those times."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID


def task_run_event(
    task: str,
    source: str,
    task_run_id: UUID,
    start_at: float | None,
    tags: list[str],
    run_id: UUID,
    state_type: str,
    name: str,
    message: str,
    at: float,
) -> Any:
    """`prefect.task-run.<name>` as Prefect's task engine sends it, at `at`: the task run
    recorder makes it the run's state with that time."""
    from prefect.events import Event

    when = datetime.fromtimestamp(at, UTC)
    start = datetime.fromtimestamp(start_at or at, UTC)
    final = state_type != "RUNNING"
    task_run = {
        "name": f"task-{task[2:10].lower()}",
        "task_key": f"ogpu-task-{source[2:10].lower()}",
        "dynamic_key": task.lower(),
        "flow_run_run_count": 1,
        "run_count": 1,
        "tags": [*tags, f"source:{source}"],
        "task_inputs": {},
        "empirical_policy": {},
        "start_time": start.isoformat(),
        "end_time": when.isoformat() if final else None,
        "total_run_time": (at - (start_at or at)) if final else 0.0,
    }
    return Event(
        id=uuid.uuid5(task_run_id, state_type),  # a resent event is the same event
        occurred=when,
        event=f"prefect.task-run.{name}",
        resource={
            "prefect.resource.id": f"prefect.task-run.{task_run_id}",
            "prefect.resource.name": task_run["name"],
            "prefect.run-count": "1",
            "prefect.state-message": message,
            "prefect.state-name": name,
            "prefect.state-timestamp": when.isoformat(),
            "prefect.state-type": state_type,
            "prefect.orchestration": "client",
        },
        related=[
            {"prefect.resource.id": f"prefect.flow-run.{run_id}", "prefect.resource.role": "flow-run"},
            *({"prefect.resource.id": f"prefect.tag.{g}", "prefect.resource.role": "tag"} for g in task_run["tags"]),
        ],
        payload={
            "intended": {"from": "RUNNING" if final else None, "to": state_type},
            "initial_state": None,
            "validated_state": {"type": state_type, "name": name, "message": message, "data": None},
            "task_run": {k: v for k, v in task_run.items() if v is not None},
        },
    )


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def chain_response_times(chain: Any) -> Callable[[list[str]], dict[str, float]]:
    """Response addresses -> their `responseTimestamp` (the real network's ABI), one batch."""

    def read(responses: list[str]) -> dict[str, float]:
        found = chain.read_many([chain.response(r).read.response_timestamp() for r in responses])
        return {r: float(t) for r, t in zip(responses, found) if t}

    return read


def chain_block_times(rpc: Any) -> Callable[[list[int]], dict[int, float]]:
    """Block numbers -> timestamps through one JSON-RPC batch (`rpc.batch`)."""

    def read(blocks: list[int]) -> dict[int, float]:
        found = rpc.batch([("eth_getBlockByNumber", [hex(b), False]) for b in blocks])
        return {b: float(int(r["timestamp"], 16)) for b, r in zip(blocks, found) if isinstance(r, dict)}

    return read
