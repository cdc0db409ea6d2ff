"""End to end: N FIRST_RESPONSE tasks on the echo source, published and awaited by the `run_batch`
flow, served by two `ogpu-provider` workers (real `prefect worker start` processes, local backend,
real HTTP to the service), under a Prefect test-harness server (SQLite), on the devnet.

After the batch, it also waits for the workers' flow runs to record every task (Completed, none
left Running) and reports that lag: the records are written off the critical path.

The floor, measured in the same run on the same devnet: the same transactions sent directly
through the chain layer, with no Prefect and no service: the client publishes the batch
(pipelined, configs written), two provider accounts attempt their halves (pipelined) and submit
responses (results stored, pipelined) in two threads.

    .venv/bin/python bench/e2e.py --tasks 1000

Ends with `floor_ratio=<ours / floor> p95_s=<publish-to-result p95 of ours>`.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import threading
import time
from pathlib import Path

from ogpu_prefect.chain.connection import Chain

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _workdir import workdir  # noqa: E402

PAY = 10**16


def floor(net, store, client, source: str, n: int) -> float:  # type: ignore[no-untyped-def]
    from ogpu_prefect.chain.types import ResponseParams
    from ogpu_prefect.models import TaskInput

    chain = client.chain
    t0 = time.perf_counter()
    published = client.publish_tasks(
        source, [TaskInput(function_name="echo", data={"text": f"f{i}"}) for i in range(n)], PAY, chain.now() + 900
    )
    tasks = [p.address for p in published]

    def serve(role: str, mine: list[str]) -> None:
        c = Chain(net.network)
        sender = c.sender(net.key(role))
        sender.wait(sender.send([c.nexus.attempt(t, sender.address, PAY) for t in mine], 300_000))
        urls = [
            store.put_json({"task": t, "provider": sender.address, "result": {"echo": {}}}, field="result")
            for t in mine
        ]
        sender.wait(
            sender.send(
                [c.nexus.submit_response(ResponseParams(t, sender.address, u, PAY)) for t, u in zip(mine, urls)],
                600_000,
            )
        )

    threads = [
        threading.Thread(target=serve, args=(role, tasks[i::2])) for i, role in enumerate(("provider1", "provider2"))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def records_lag(finalized: int, timeout: float = 480) -> float:
    """Seconds after the batch until the workers' flow runs record it: none still Running, and
    one Completed per finalized task (the journal writes off the critical path)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
    )
    from prefect.client.schemas.objects import StateType

    def count(*types: StateType) -> int:
        with get_client(sync_client=True) as c:
            return c.count_flow_runs(
                flow_run_filter=FlowRunFilter(
                    tags=FlowRunFilterTags(all_=["ogpu-provider"]),
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=list(types))),
                )
            )

    t0 = time.perf_counter()
    shown = t0
    while time.perf_counter() - t0 < timeout:
        completed, running = count(StateType.COMPLETED), count(StateType.RUNNING)
        if completed >= finalized and running == 0:
            lag = time.perf_counter() - t0
            with get_client(sync_client=True) as c:  # why any failed: the workdir and its logs go
                failed = c.read_flow_runs(
                    limit=10,
                    flow_run_filter=FlowRunFilter(
                        tags=FlowRunFilterTags(all_=["ogpu-provider"]),
                        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.FAILED])),
                    ),
                )
            for run in failed:
                print(f"  failed: {run.parameters.get('task')}: {run.state.message if run.state else ''}")
            return lag
        if time.perf_counter() - shown > 30:
            shown = time.perf_counter()
            print(
                f"  records after {shown - t0:.0f}s: {completed}/{finalized} Completed, {running} Running, "
                f"{count(StateType.CANCELLED)} Cancelled, {count(StateType.FAILED)} Failed",
                flush=True,
            )
        time.sleep(0.5)
    return float("inf")


ROLES = (
    ("prefect.server", "Prefect server"),
    ("prefect worker start", "2 workers"),
    ("worker.runner", "2 services"),
    ("anvil", "anvil"),
)


def cpu_seconds() -> dict[int, tuple[str, float]]:
    """CPU seconds used so far by each process of the run, by pid, with its part: the client
    (this process: the run_batch flow and the payload server), the Prefect server, the workers,
    the services, anvil. From /proc (Linux)."""
    import os

    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, tuple[str, float]] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        role = "client" if int(pid) == os.getpid() else next((r for key, r in ROLES if key in cmd), None)
        if role is not None:
            out[int(pid)] = (role, (int(fields[11]) + int(fields[12])) / tick)
    return out


def cpu_by_part(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict[str, float]:
    parts: dict[str, float] = {}
    for pid, (role, secs) in after.items():
        parts[role] = parts.get(role, 0.0) + secs - before.get(pid, (role, 0.0))[1]
    return parts


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `timeout` still stops what we started
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=1000)
    args = ap.parse_args()
    from prefect.testing.utilities import prefect_test_harness

    from ogpu_prefect.blocks import OGPUWallet
    from ogpu_prefect.chain import devnet as devnet_mod
    from ogpu_prefect.flows.run_batch import run_batch
    from ogpu_prefect.storage import LocalStore
    from tests.test_worker import Fleet

    with workdir("bench-e2e-") as tmp:
        net = devnet_mod.start()
        fleet = None
        try:
            with prefect_test_harness(server_startup_timeout=90), LocalStore(tmp / "payloads") as store:
                fleet = Fleet(net, store, tmp, "e2e")
                floor_source = fleet.publish_source()
                chain = Chain(net.network)
                for role in ("provider1", "provider2"):
                    s = chain.sender(net.key(role))
                    s.transact(chain.vault.deposit(s.address, value=10**18))
                    s.transact(chain.vault.lock(10**18))
                    s.transact(chain.nexus.register(floor_source, s.address, 1))
                floor_s = floor(net, store, fleet.client, floor_source, args.tasks)
                print(f"floor (chain layer only): {args.tasks} tasks in {floor_s:.1f}s", flush=True)

                source = fleet.publish_source()
                for role in ("provider1", "provider2"):
                    fleet.create_pool(f"e2e-{role}", [source], wallet_block=f"e2e-{role}", max_concurrent_tasks=64)
                    fleet.start_worker(f"e2e-{role}", role)
                for role in ("provider1", "provider2"):
                    fleet.wait_registered(source, role)
                OGPUWallet(private_key=net.key("client")).save("e2e-client", overwrite=True)
                cpu0, t0 = cpu_seconds(), time.perf_counter()
                inputs = [{"text": f"t{i}"} for i in range(args.tasks)]
                results = run_batch(
                    source,
                    inputs,
                    PAY,
                    "e2e-net",
                    "e2e-client",
                    "e2e-store",
                    function_name="echo",
                    task_timeout=900,
                    poll_interval=0.1,
                )
                ours = time.perf_counter() - t0
                cpu = cpu_by_part(cpu0, cpu_seconds())
                finalized = sum(r.status == "finalized" for r in results)
                lag = records_lag(finalized)
        finally:
            for role in list(fleet.procs) if fleet is not None else []:  # also on Ctrl-C / SIGTERM
                fleet.stop(role)
            net.stop()
        for role in ("provider1", "provider2"):  # what the workers' logs say, before the workdir goes
            text = (tmp / f"worker-{role}.log").read_text(errors="replace")
            notable = {
                k: text.count(k)
                for k in (
                    "stuck in anvil's queue",
                    "closed without our response",
                    "failed unexpectedly",
                    "chain watch failed",
                    "ERROR",
                )
            }
            print(f"worker {role} log: " + ", ".join(f"{k!r} x{v}" for k, v in notable.items()))
        done = [r for r in results if r.status == "finalized"]
        lat = sorted(r.latency_s for r in done if r.latency_s is not None)
        p50 = statistics.median(lat) if lat else float("nan")
        p95 = lat[min(len(lat) - 1, int(0.95 * len(lat)))] if lat else float("nan")
        print(
            f"ours (run_batch + 2 workers): {len(done)}/{args.tasks} finalized in {ours:.1f}s; "
            f"latency p50 {p50:.2f}s p95 {p95:.2f}s"
        )
        if lat:
            deciles = " ".join(f"{lat[min(len(lat) - 1, len(lat) * k // 10)]:.2f}" for k in range(11))
            print(f"latency deciles (min..max): {deciles}")
        print(
            f"CPU seconds during the batch ({ours:.1f}s of wall on {os.cpu_count()} CPUs): "
            + ", ".join(f"{k} {v:.1f}" for k, v in sorted(cpu.items(), key=lambda kv: -kv[1]))
        )
        print(f"provider flow runs recorded {lag:.1f}s after the batch returned (the journal is off the critical path)")
        print(f"floor_ratio={ours / floor_s:.2f} p95_s={p95:.2f}")


if __name__ == "__main__":
    main()
