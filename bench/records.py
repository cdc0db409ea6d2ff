"""How fast an idle Prefect API takes the provider worker's flow-run records, and how close the
journal (ogpu_prefect/worker/journal.py) comes to that: the records part of `records_lag_s` in
bench/e2e.py, apart from the batch's load.

On a fresh stack (`sqlite` or `production`), with a pool, a queue and a deployment like the
worker's, N tasks (default 1,000) are recorded twice:
- the floor: the same requests the journal makes per task, sent by a bare loop at `--at-once`
  requests in flight: POST /flow_runs/ (Running, in the pool's queue), PATCH its
  infrastructure_pid, bulk_set_state Completed (50 a request), POST its result artifact;
- ours: a FlowRunJournal told of every task's start and end at once, flushing until nothing is
  pending (its own pacing, concurrency and retries).

    .venv/bin/python bench/records.py [--tasks 1000] [--stack production] [--at-once 8] [--profile] [--smoke]

Each phase prints the CPU seconds of every part (this process, the Prefect API and services,
PostgreSQL, Redis) from /proc; `--profile` adds a py-spy profile of this process and the Prefect
servers in each phase (bench/_profile.py).

Ends with `records_floor_s=<s> records_ours_s=<s> records_vs_floor=<ours / floor>`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any
from uuid import UUID

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _prefect_api import cpu_by_part, cpu_seconds, parts_text, postmaster_pid, prefect_api, server_pids  # noqa: E402
from _profile import start_profilers, stop_profilers  # noqa: E402
from _smoke import parse_args  # noqa: E402
from _workdir import workdir  # noqa: E402

ARTIFACT = "| task | response |\n|---|---|\n| 0x... | 0x... |"


async def setup(client: Any, tag: str) -> tuple[UUID, UUID, str, str]:
    from prefect.client.schemas.actions import WorkPoolCreate

    pool, queue = f"records-{tag}", f"queue-{tag}"
    await client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
    await client.create_work_queue(name=queue, work_pool_name=pool)
    flow_id = await client.create_flow_from_name(f"records-{tag}")
    deployment_id = await client.create_deployment(
        flow_id=flow_id, name=tag, work_pool_name=pool, work_queue_name=queue
    )
    return flow_id, deployment_id, pool, queue


async def floor(client: Any, n: int, at_once: int) -> float:
    """The journal's requests for n tasks, from a bare loop: seconds."""
    from prefect.client.schemas.actions import ArtifactCreate

    flow_id, deployment_id, pool, queue = await setup(client, "floor")
    limit = asyncio.Semaphore(at_once)
    ids: list[str] = []

    async def create(i: int) -> None:
        async with limit:
            body = {
                "name": f"task-{i}",
                "idempotency_key": f"floor-{i}",
                "flow_id": str(flow_id),
                "deployment_id": str(deployment_id),
                "work_pool_name": pool,
                "work_queue_name": queue,
                "state": {"type": "RUNNING", "name": "Running", "message": "executing"},
            }
            run = (await client.request("POST", "/flow_runs/", json=body)).json()
            await client.update_flow_run(run["id"], infrastructure_pid=f"0xprovider:0x{i:040x}")
            ids.append(run["id"])

    async def complete(chunk: list[str]) -> None:
        async with limit:
            state = {"type": "COMPLETED", "name": "Completed", "message": "responded"}
            body = {"flow_runs": {"id": {"any_": chunk}}, "state": state, "force": True, "limit": 50}
            await client.request("POST", "/flow_runs/bulk_set_state", json=body)

    async def artifact(run_id: str) -> None:
        async with limit:
            await client.create_artifact(ArtifactCreate(type="markdown", data=ARTIFACT, flow_run_id=UUID(run_id)))

    start = time.perf_counter()
    await asyncio.gather(*(create(i) for i in range(n)))
    await asyncio.gather(*(complete(ids[i : i + 50]) for i in range(0, n, 50)))
    await asyncio.gather(*(artifact(r) for r in ids))
    return time.perf_counter() - start


async def ours(client: Any, n: int) -> float:
    """A FlowRunJournal recording n tasks that started and ended: seconds until nothing is pending."""
    import anyio

    from ogpu_prefect.worker.journal import FlowRunJournal

    flow_id, deployment_id, pool, queue = await setup(client, "ours")
    log = logging.getLogger("bench.records")
    journal = FlowRunJournal(
        client,
        deployment_id,
        flow_id,
        pool,
        queue,
        ["ogpu-provider"],
        lambda run: logging.LoggerAdapter(log, {}),
        log,
    )
    start = time.perf_counter()
    for i in range(n):
        task = f"0x{i:040x}"
        journal.start(task, {"task": task}, f"ours-{i}", infrastructure=f"0xprovider:{task}")
        journal.end(task, "COMPLETED", "responded", ARTIFACT)
    stop = anyio.Event()
    async with anyio.create_task_group() as group:
        group.start_soon(journal.run, stop)
        while journal.pending():
            await anyio.sleep(0.05)
        stop.set()
    return time.perf_counter() - start


class Phase:
    """One phase's CPU seconds by part, and its py-spy profiles when asked."""

    def __init__(self, home: Path, name: str, profile: dict[str, Any] | None) -> None:
        self.pg, self.name, self.profile = postmaster_pid(home), name, profile
        self.profs: list[Any] = []

    def __enter__(self) -> None:
        if self.profile is not None:
            targets = {"bench": os.getpid(), **{f"{self.name}-{k}": pid for k, pid in server_pids().items()}}
            self.profs = start_profilers(targets, self.profile["dir"], self.profile["rate"])
        self.cpu0 = cpu_seconds(self.pg)

    def __exit__(self, *exc: object) -> None:
        cpu = cpu_by_part(self.cpu0, cpu_seconds(self.pg))
        total = sum(cpu.values())
        print(f"{self.name}: CPU seconds ({total:.1f} on {os.cpu_count()} CPUs): {parts_text(cpu)}", flush=True)
        if self.profs:
            stop_profilers(self.profs)


async def measure(api: str, home: Path, n: int, at_once: int, profile: dict[str, Any] | None) -> tuple[float, float]:
    from prefect.client.orchestration import PrefectClient

    async with PrefectClient(api) as client:  # this stack's API, whatever the profile says
        with Phase(home, "floor", profile):
            floor_s = await floor(client, n, at_once)
        print(f"floor: {n} records in {floor_s:.1f}s ({n / floor_s:.0f}/s) at {at_once} requests in flight")
        with Phase(home, "ours", profile):
            ours_s = await ours(client, n)
        print(f"ours (FlowRunJournal): {n} records in {ours_s:.1f}s ({n / ours_s:.0f}/s)")
        return floor_s, ours_s


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--stack", choices=("sqlite", "production"), default="production")
    ap.add_argument("--at-once", type=int, default=8, help="the floor's requests in flight (the journal's own: 8)")
    ap.add_argument("--profile", action="store_true", help="py-spy this process and the servers in each phase")
    ap.add_argument("--profile-rate", type=int, default=50)
    ap.add_argument("--profile-dir", type=Path, default=Path("/tmp"), help="where py-spy's raw profiles are kept")
    args = parse_args(ap, tasks=10, stack="sqlite")
    profile = {"dir": args.profile_dir, "rate": args.profile_rate} if args.profile else None
    with workdir("ogpu-records-") as tmp, prefect_api(tmp, args.stack) as info:
        floor_s, ours_s = asyncio.run(measure(info.api_url, tmp, args.tasks, args.at_once, profile))
    print(f"records_floor_s={floor_s:.1f} records_ours_s={ours_s:.1f} records_vs_floor={ours_s / floor_s:.2f}")


if __name__ == "__main__":
    main()
