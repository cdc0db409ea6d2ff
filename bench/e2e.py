"""End to end: N FIRST_RESPONSE tasks on the echo source, published and awaited by the `run_batch`
flow, served by W `ogpu-provider` workers in one work pool (real `prefect worker start` processes,
one provider key each, local backend, real HTTP to the official `ogpu.service`), on the devnet,
under a Prefect server stack (ogpu_prefect/stack.py): `sqlite` (one `prefect server start`) or
`production` (PostgreSQL + Redis + API server(s) + one services process).

Measured in the same run, on the same devnet (bench/_floors.py):
- the chain floor: the same transactions through the chain layer, no Prefect, no service;
- the service floor: the same transactions plus, per task, the config fetch, the call to warm
  instances of the same official `ogpu.service` echo source (local backend, one per provider) and
  its callback, the result stored, driven by a minimal loop with no Prefect: the job's physical
  limit on this machine;
- both at one task too (medians of --idle-runs), beside our idle latency: one task on an idle
  devnet with warm workers, publish to result (TaskResult.latency_s), with where its seconds go
  (chain events seen by a 2 ms poller, the worker's flow-run log lines with their own times, the
  client's decision time).

After the batch it waits for the workers' flow runs to record every task (Completed, none left
Running; the journal writes off the critical path) and reports that lag; then it stops the
workers and compares the `ogpu.` events the client and workers emitted (their senders' counters;
workers run through bench/_counted_worker.py) with those the server stored.

    .venv/bin/python bench/e2e.py --tasks 1000 --workers 2 --stack production [--profile] [--smoke]

Ends with `floor_ratio=<ours / chain floor> service_floor_ratio=<ours / service floor>
records_lag_s=<s> events_dropped=<n> p95_s=<s> idle_latency_s=<s>` (one line).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _floors import ServiceRig, chain_floor, service_floor, stand_providers  # noqa: E402
from _prefect_api import (  # noqa: E402
    cpu_by_part,
    cpu_seconds,
    machine_busy,
    parts_text,
    postmaster_pid,
    prefect_api,
    queue_full_lines,
    sender_counts,
    server_pids,
    wait_stored,
)
from _profile import dump_threads, start_profilers, stop_profilers  # noqa: E402
from _smoke import parse_args  # noqa: E402
from _workdir import workdir  # noqa: E402

from ogpu_prefect.chain.connection import Chain  # noqa: E402

PAY = 10**16
PROVIDERS = ("bench-p1", "bench-p2", "bench-p3", "bench-p4")
"""Provider roles with keys of this run's own (see OwnKeys)."""
BENCH = Path(__file__).resolve().parent


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


# ---- the workers ----


class OwnKeys:
    """The devnet, with provider keys of this run's own (random, funded with ETH; a worker
    deposits and locks the stake it needs). Not the devnet's provider accounts: other sessions on
    this machine run workers with those, and a starting worker stops every local service of its
    key's address, whoever started it (LocalBackend.reap), which stopped ours mid-run."""

    def __init__(self, net: Any, roles: tuple[str, ...]) -> None:
        import secrets

        from ogpu_prefect.chain.signing import Signer

        self.net = net
        self.keys = {r: "0x" + secrets.token_hex(32) for r in roles}
        self.addresses = {r: Signer(k).address for r, k in self.keys.items()}
        rpc = Chain(net.network).rpc
        for address in self.addresses.values():
            rpc.call("anvil_setBalance", [address, hex(10**22)])

    def key(self, role: str) -> str:
        return self.keys[role] if role in self.keys else self.net.key(role)

    def address(self, role: str) -> str:
        return self.addresses[role] if role in self.addresses else self.net.address(role)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.net, name)


def bench_fleet(net: Any, store: Any, tmp: Path) -> Any:
    from tests.test_worker import Fleet

    class BenchFleet(Fleet):
        """The tests' Fleet, with every worker in one pool (its key from the per-machine wallet
        setting) and run through bench/_counted_worker.py (its event counters in a file)."""

        def start_worker(self, pool: str, role: str) -> subprocess.Popen[bytes]:
            from prefect.settings import PREFECT_API_URL

            from ogpu_prefect.worker.worker import worker_command

            self.wallet(role)
            env = {
                **os.environ,
                "PREFECT_API_URL": PREFECT_API_URL.value(),
                "PREFECT_WORKER_QUERY_SECONDS": "2",
                "PREFECT_HOME": str(self.tmp / f"home-{role}"),
                "PREFECT_INTEGRATIONS_OGPU_PROVIDER_WALLET_BLOCK": f"{self.name}-{role}",
                "OGPU_BENCH_EVENTS_FILE": str(self.tmp / f"events-{role}.json"),
            }
            log = open(self.tmp / f"worker-{role}.log", "ab")  # noqa: SIM115
            cmd = worker_command(pool, f"{self.name}-{role}")
            assert cmd[1:3] == ["-m", "prefect"], cmd
            proc = subprocess.Popen(
                [sys.executable, str(BENCH / "_counted_worker.py"), *cmd[3:]],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            self.procs[role] = proc
            return proc

    return BenchFleet(net, store, tmp, "e2e")


def wait_services(net: Any, roles: tuple[str, ...], timeout: float = 120) -> None:
    """Until each provider's warm service process exists (workers start them with the watcher)."""
    from tests.test_worker import service_processes

    deadline = time.time() + timeout
    while not all(service_processes(net.address(r)) for r in roles):
        if time.time() > deadline:
            raise RuntimeError("the workers' services did not start")
        time.sleep(0.2)
    time.sleep(1.0)


def records_lag(expected: int, timeout: float) -> tuple[float, dict[str, int]]:
    """Seconds after the batch until the workers' flow runs record it: none still Running, and
    one Completed (or Failed: their messages are printed) per finalized task (the journal writes
    off the critical path); with the counts by state at that moment (or at `timeout`: then the
    lag is inf)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
    )
    from prefect.client.schemas.objects import StateType

    def count(c: Any, *types: StateType) -> int:
        return c.count_flow_runs(
            flow_run_filter=FlowRunFilter(
                tags=FlowRunFilterTags(all_=["ogpu-provider"]),
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=list(types))),
            )
        )

    def counts() -> dict[str, int]:
        with get_client(sync_client=True) as c:
            return {
                s.value.lower(): count(c, s)
                for s in (StateType.COMPLETED, StateType.RUNNING, StateType.CANCELLED, StateType.FAILED)
            }

    t0 = time.perf_counter()
    shown = t0
    while True:
        now = counts()
        if now["completed"] + now["failed"] >= expected and now["running"] == 0:
            lag = time.perf_counter() - t0
            break
        if time.perf_counter() - t0 > timeout:
            lag = float("inf")
            break
        if time.perf_counter() - shown > 15:
            shown = time.perf_counter()
            print(f"  records after {shown - t0:.0f}s: {now} (expecting {expected} completed)", flush=True)
        time.sleep(0.5)
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
    return lag, now


def completed_by_queue() -> Counter[str]:
    """Completed provider flow runs by work queue (one queue per provider)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
    )
    from prefect.client.schemas.objects import StateType

    out: Counter[str] = Counter()
    with get_client(sync_client=True) as c:
        offset = 0
        while True:
            runs = c.read_flow_runs(
                limit=200,
                offset=offset,
                flow_run_filter=FlowRunFilter(
                    tags=FlowRunFilterTags(all_=["ogpu-provider"]),
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.COMPLETED])),
                ),
            )
            out.update(r.work_queue_name or "?" for r in runs)
            if len(runs) < 200:
                return out
            offset += 200


# ---- the idle latency and where it goes ----


class ChainWatch(threading.Thread):
    """First-seen wall-clock time of each Nexus lifecycle event, polled every 2 ms: when each
    transaction was mined, within a few ms."""

    def __init__(self, network: Any) -> None:
        super().__init__(daemon=True, name="bench-chain-watch")
        self.chain = Chain(network)
        self.cursor = self.chain.cursor(
            ("TaskPublished", "Attempted", "ResponseSubmitted", "TaskStatusChanged"), self.chain.block_number() + 1
        )
        self.seen: dict[tuple[str, ...], float] = {}
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                events = self.cursor.poll()
            except Exception:  # noqa: BLE001 - a missed poll only blurs a time
                events = []
            now = time.time()
            for e in events:
                if "task" not in e.args:
                    continue
                task = e["task"].lower()
                self.seen.setdefault((e.name, task), now)
                if "provider" in e.args:
                    self.seen.setdefault((e.name, task, e["provider"].lower()), now)
            time.sleep(0.002)


class ClientMarks:
    """Instrumentation of this process' waiting loop, the calls themselves unchanged: when each
    task was decided and when the wait for it began."""

    def __init__(self) -> None:
        from ogpu_prefect.waiting import Waiter

        self.decided: dict[str, tuple[float, float]] = {}  # task -> (published_at, decided_at)
        self.waiting: dict[str, float] = {}  # task -> when its Waiter.run began
        settle, run = Waiter._settle, Waiter.run
        marks = self

        def _settle(self: Any, t: Any, decision: Any, kind: str | None = None) -> None:
            settle(self, t, decision, kind)
            marks.decided[t.published.address.lower()] = (t.published.published_at, t.decided_at or time.time())

        def _run(self: Any, deadline: float) -> Any:
            began = time.time()
            for address in self.tracked:
                marks.waiting[address.lower()] = began
            return run(self, deadline)

        Waiter._settle, Waiter.run = _settle, _run  # type: ignore[method-assign]


class CallTimer:
    """Instrumentation of the client's path through run_batch, the calls themselves unchanged:
    the start and end of each call of the module-level names run_batch uses (its Prefect tasks
    included) and of a few methods. `calls` holds (name, start, end), wall clock."""

    RUN_BATCH_NAMES = (
        "redact_stored_parameters",
        "tag_run",
        "check_parameters",
        "check_limits",
        "_check_inputs",
        "make_client",
        "open_batch",
        "live_ledger",
        "ProgressReporter",
        "publish_tasks",
        "wait_for_results",
        "report_batch",
    )

    def __init__(self) -> None:
        import ogpu_prefect.flows.run_batch as rb
        import ogpu_prefect.tasks as tasks_mod
        from ogpu_prefect.batch import Ledger
        from ogpu_prefect.batch_report import ProgressReporter
        from ogpu_prefect.client import OGPUClient
        from ogpu_prefect.waiting import Waiter

        self.calls: list[tuple[str, float, float]] = []
        for name in self.RUN_BATCH_NAMES:
            setattr(rb, name, self._wrap(getattr(rb, name), name))
        tasks_mod.make_client = self._wrap(tasks_mod.make_client, "make_client (in a task)")  # type: ignore[assignment]
        for cls, method in (
            (ProgressReporter, "close"),
            (Ledger, "add"),
            (OGPUClient, "source_terms"),
            (OGPUClient, "check_batch"),
            (OGPUClient, "publish_tasks"),
            (Waiter, "run"),
        ):
            setattr(cls, method, self._wrap(getattr(cls, method), f"{cls.__name__}.{method}"))

    def _wrap(self, fn: Any, name: str) -> Any:
        calls = self.calls

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.time()
            try:
                return fn(*args, **kwargs)
            finally:
                calls.append((name, start, time.time()))

        return timed

    def between(self, t0: float, t1: float) -> list[tuple[str, float, float]]:
        return sorted((c for c in self.calls if t0 <= c[1] <= t1), key=lambda c: c[1])


WORKER_LINES = (
    ("exec", "running task "),  # execution.py: the task is handed to Provider.execute
    ("handler", "[service] echo:"),  # the echo handler's print, as the worker's pump read it
    ("returned", "completed successfully"),  # ogpu.service logs it after the handler returned
    ("callback", "Callback sent to"),  # ogpu.service logs it once our receiver answered the POST
    ("responded", "submitted ("),  # execution.py: the response's receipt is in
)


def worker_lines(tasks: list[str], timeout: float = 30.0) -> dict[str, dict[str, float]]:
    """task -> {mark: wall-clock time} from the Completed flow run of each task (the winner's):
    its log lines carry the time they were written in the worker."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterName,
        FlowRunFilterState,
        FlowRunFilterStateType,
        LogFilter,
        LogFilterFlowRunId,
    )
    from prefect.client.schemas.objects import StateType

    names = {f"task-{t[2:10].lower()}": t.lower() for t in tasks}
    deadline = time.time() + timeout
    out: dict[str, dict[str, float]] = {}
    while True:
        with get_client(sync_client=True) as c:
            runs = c.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    name=FlowRunFilterName(any_=list(names)),
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.COMPLETED])),
                )
            )
            by_run = {r.id: r.parameters.get("task", "").lower() for r in runs}
            logs = (
                c.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=list(by_run))), limit=200)
                if by_run
                else []
            )
        out = {}
        for entry in logs:
            task = by_run.get(entry.flow_run_id)
            for mark, text in WORKER_LINES:
                if task and text in entry.message:
                    out.setdefault(task, {}).setdefault(mark, entry.timestamp.timestamp())
        if all(len(out.get(t.lower(), {})) == len(WORKER_LINES) for t in tasks) or time.time() > deadline:
            return out
        time.sleep(1.0)


SEGMENTS = (
    ("flow start -> publish sent (client: flow run, blocks, checks, batch variable, publish task)", "t0", "sent"),
    ("publish sent -> TaskPublished mined", "sent", "published"),
    ("TaskPublished -> Attempted mined (worker: chain poll wait, reads, attempt tx)", "published", "attempted"),
    ("Attempted mined -> execution starts (worker: receipt poll, runs.start)", "attempted", "exec"),
    ("execution -> handler runs (task reads, config fetch, POST /run, service)", "exec", "handler"),
    ("handler -> handler returned (service)", "handler", "returned"),
    ("handler returned -> callback answered (service's callback POST)", "returned", "callback"),
    ("callback -> ResponseSubmitted mined (result stored, responder, tx)", "callback", "response"),
    ("ResponseSubmitted mined -> worker sees receipt", "response", "responded"),
    ("ResponseSubmitted mined -> client decided (client poll, reads, result fetch)", "response", "decided"),
    ("client decided -> run_batch returned (reports, artifacts, flow end)", "decided", "t1"),
)


TIMER: CallTimer | None = None


def idle_latency(
    net: Any, source: str, runs: int, pause: float
) -> tuple[list[float], list[float], list[dict[str, float]]]:
    """Runs `runs` one-task batches (after one warm-up), each after `pause` seconds of idle; returns
    their publish-to-result latencies, run_batch walls, and timelines (see SEGMENTS)."""
    from ogpu_prefect.flows.run_batch import run_batch

    global TIMER
    marks = ClientMarks()
    timer = TIMER = CallTimer()
    watch = ChainWatch(net.network)
    watch.start()
    done: list[tuple[Any, float, float]] = []
    try:
        for k in range(runs + 1):
            time.sleep(pause)
            t0 = time.time()
            result = run_batch(
                source,
                [{"text": f"idle {k}"}],
                PAY,
                "e2e-net",
                "e2e-client",
                "e2e-store",
                function_name="echo",
                task_timeout=300,
                poll_interval=0.1,
            )[0]
            t1 = time.time()
            if k:  # the first one warms up the client's flow machinery
                done.append((result, t0, t1))
            print(
                f"  idle run {k}{' (warm-up)' if not k else ''}: {result.status}, publish to result "
                f"{result.latency_s or float('nan'):.2f}s, run_batch {t1 - t0:.2f}s",
                flush=True,
            )
    finally:
        watch.halt.set()
        watch.join(timeout=5)
    tasks = [r.task for r, _, _ in done if r.task]
    lines = worker_lines(tasks)
    timelines = []
    for r, t0, t1 in done:
        if r.status != "finalized" or not r.task:
            continue
        task, winner = r.task.lower(), (r.provider or "").lower()
        sent, decided = marks.decided.get(task, (float("nan"), float("nan")))
        marks_of = {
            "t0": t0,
            "sent": sent,
            "published": watch.seen.get(("TaskPublished", task), float("nan")),
            "attempted": watch.seen.get(("Attempted", task, winner), float("nan")),
            "response": watch.seen.get(("ResponseSubmitted", task), float("nan")),  # FIRST_RESPONSE: the one
            "decided": decided,
            "waiting": marks.waiting.get(task, float("nan")),
            "t1": t1,
            **lines.get(task, {}),
        }
        for name, start, end in timer.between(t0, t1):
            marks_of[f"call {name}"] = marks_of.get(f"call {name}", 0.0) + (end - start)
            marks_of.setdefault(f"at {name}", start - t0)
        timelines.append(marks_of)
    latencies = [r.latency_s for r, _, _ in done if r.status == "finalized" and r.latency_s is not None]
    walls = [t1 - t0 for _, t0, t1 in done]
    return latencies, walls, timelines


def print_timelines(timelines: list[dict[str, float]]) -> None:
    if not timelines:
        return
    print("where one idle task's seconds go (medians over the idle runs; each run's in brackets):")
    for label, a, b in SEGMENTS:
        values = [t.get(b, float("nan")) - t.get(a, float("nan")) for t in timelines]
        ok = [v for v in values if v == v]
        each = ", ".join(f"{v:.3f}" for v in values)
        print(f"  {median(ok):7.3f}s  {label}  [{each}]")
    print("the client's calls in run_batch (median start after the flow call, median seconds in it):")
    names = sorted(
        {k[5:] for t in timelines for k in t if k.startswith("call ")}, key=lambda n: timelines[0].get(f"at {n}", 99)
    )
    for name in names:
        starts = [t[f"at {name}"] for t in timelines if f"at {name}" in t]
        secs = [t[f"call {name}"] for t in timelines if f"call {name}" in t]
        print(f"  at {median(starts):6.3f}s  {median(secs):6.3f}s  {name}")
    waits = [t["waiting"] - t["sent"] for t in timelines if t.get("waiting") == t.get("waiting")]
    resp = [t["response"] - t["sent"] for t in timelines if t.get("response") == t.get("response")]
    print(
        f"  (the client's waiting loop began {median(waits):.3f}s after the publish was sent; "
        f"the response was mined {median(resp):.3f}s after it)"
    )


# ---- main ----


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `timeout` still stops what we started
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2, choices=range(1, len(PROVIDERS) + 1))
    ap.add_argument("--stack", choices=("sqlite", "production"), default="production")
    ap.add_argument("--servers", type=int, default=1, help="API servers of the production stack")
    ap.add_argument("--idle-runs", type=int, default=5, help="one-task runs for the idle latency (and floors)")
    ap.add_argument("--idle-pause", type=float, default=2.0, help="seconds of idle before each one-task run")
    ap.add_argument("--records-timeout", type=float, default=300.0)
    ap.add_argument("--profile", action="store_true", help="py-spy the client, workers and servers in the batch")
    ap.add_argument("--profile-rate", type=int, default=50)
    ap.add_argument("--profile-dir", type=Path, default=Path("/tmp"), help="where py-spy's raw profiles are kept")
    ap.add_argument("--dump-after", type=float, default=0.0, help="py-spy dump the workers this many s into the batch")
    args = parse_args(ap, tasks=4, workers=1, stack="sqlite", idle_runs=1, idle_pause=0.0, records_timeout=120.0)
    from ogpu_prefect.blocks import OGPUWallet
    from ogpu_prefect.chain import devnet as devnet_mod
    from ogpu_prefect.flows.run_batch import run_batch
    from ogpu_prefect.storage import LocalStore

    roles = PROVIDERS[: args.workers]
    with workdir("bench-e2e-") as tmp:
        net = devnet_mod.start()
        fleet = rig = None
        try:
            with prefect_api(tmp, args.stack, args.servers) as info, LocalStore(tmp / "payloads") as store:
                print(f"stack {args.stack}: API {', '.join(info.api_urls)}; {args.workers} worker(s)", flush=True)
                own = OwnKeys(net, roles)
                fleet = bench_fleet(own, store, tmp)
                keys = [own.key(r) for r in roles]
                client_key = net.key("client")
                floor_source = fleet.publish_source()
                stand_providers(net.network, dict(zip(roles, keys)), floor_source)

                rig = ServiceRig(keys)
                one_chain = [
                    chain_floor(net.network, client_key, keys[:1], store, floor_source, 1)
                    for _ in range(args.idle_runs)
                ]
                one_service = [
                    service_floor(net.network, client_key, keys[:1], store, floor_source, 1, rig)
                    for _ in range(args.idle_runs)
                ]
                print(
                    f"one task, publish to response mined: chain floor {median(one_chain):.3f}s, "
                    f"service floor {median(one_service):.3f}s (medians of {args.idle_runs})",
                    flush=True,
                )
                cpu0, m0 = cpu_seconds(), machine_busy()
                chain_s = chain_floor(net.network, client_key, keys, store, floor_source, args.tasks)
                cpu1, m1 = cpu_seconds(), machine_busy()
                print(f"chain floor: {args.tasks} tasks in {chain_s:.2f}s", flush=True)
                service_s = service_floor(net.network, client_key, keys, store, floor_source, args.tasks, rig)
                cpu_chain, cpu_service = cpu_by_part(cpu0, cpu1), cpu_by_part(cpu1, cpu_seconds())
                machine_floors = (m1 - m0, machine_busy() - m1)
                print(f"service floor: {args.tasks} tasks in {service_s:.2f}s", flush=True)
                rig.close()
                rig = None

                source = fleet.publish_source()
                began = time.time()
                fleet.create_pool("e2e", [source], wallet_block=f"e2e-{roles[0]}", max_concurrent_tasks=64)
                for role in roles:
                    fleet.start_worker("e2e", role)
                for role in roles:
                    fleet.wait_registered(source, role, timeout=180)
                wait_services(own, roles)
                OGPUWallet(private_key=client_key).save("e2e-client", overwrite=True)

                latencies, walls, timelines = idle_latency(net, source, args.idle_runs, args.idle_pause)
                idle_s = median(latencies)
                print(
                    f"idle latency (publish to result, warm workers): median {idle_s:.3f}s of "
                    f"{', '.join(f'{x:.2f}' for x in latencies)}; run_batch wall median {median(walls):.2f}s",
                    flush=True,
                )
                print_timelines(timelines)

                pg = postmaster_pid(tmp)
                profs = []
                if args.profile:
                    targets = {"client": os.getpid()}
                    targets.update({f"worker-{r}": p.pid for r, p in fleet.procs.items()})
                    targets.update(server_pids())
                    profs = start_profilers(targets, args.profile_dir, args.profile_rate)
                dumps: list[str] = []
                dumper = (
                    dump_threads({f"worker-{r}": p.pid for r, p in fleet.procs.items()}, args.dump_after, dumps)
                    if args.dump_after
                    else None
                )
                busy0, load0 = machine_busy(), os.getloadavg()[0]
                cpu0, t0 = cpu_seconds(pg), time.perf_counter()
                results = run_batch(
                    source,
                    [{"text": f"t{i}"} for i in range(args.tasks)],
                    PAY,
                    "e2e-net",
                    "e2e-client",
                    "e2e-store",
                    function_name="echo",
                    task_timeout=900,
                    poll_interval=0.1,
                )
                ours = time.perf_counter() - t0
                if TIMER is not None:  # the client's calls in the batch
                    start = time.time() - ours
                    print(
                        "the client's calls in the batch (start after the flow call, seconds in it): "
                        + "; ".join(
                            f"{n} at {a - start:.2f}s {b - a:.2f}s" for n, a, b in TIMER.between(start, time.time())
                        )
                    )
                cpu = cpu_by_part(cpu0, cpu_seconds(pg))
                busy, load1 = machine_busy() - busy0, os.getloadavg()[0]
                if profs:
                    stop_profilers(profs)
                if dumper is not None:
                    dumper.join(timeout=120)
                    print("\n".join(dumps))
                finalized = sum(r.status == "finalized" for r in results)
                expected = finalized + len(latencies) + 1  # the idle runs' tasks and the warm-up's
                lag, states = records_lag(expected, args.records_timeout)
                by_queue = completed_by_queue()

                for role in roles:  # workers flush their events on a clean stop
                    fleet.stop(role)
                events_mod_flush()
                mine = sender_counts()
                workers = {r: json.loads((tmp / f"events-{r}.json").read_text()) for r in roles}
                emitted = sum(c["sent"] + c["dropped"] + c["unsent"] for c in [mine, *workers.values()])
                stored = wait_stored(began, emitted)
                queue_full = queue_full_lines(tmp)
        finally:
            if rig is not None:
                rig.close()
            for role in list(fleet.procs) if fleet is not None else []:  # also on Ctrl-C / SIGTERM
                fleet.stop(role)
            net.stop()
        for role in roles:  # what the workers' logs say, before the workdir goes
            text = (tmp / f"worker-{role}.log").read_text(errors="replace")
            notable = {
                k: text.count(k)
                for k in (
                    "stuck in anvil's queue",
                    "closed without our response",
                    "failed unexpectedly",
                    "chain watch failed",
                    "recording flow runs failed",
                    "left running by an earlier worker",
                    "could not warm",
                    "ERROR",
                )
            }
            print(f"worker {role} log: " + ", ".join(f"{k!r} x{v}" for k, v in notable.items()))
            lines = text.splitlines()
            for i in [i for i, line in enumerate(lines) if "ERROR" in line][:3]:
                cause = next((c for c in lines[i + 1 : i + 80] if re.match(r"[\w.]+(Error|Exception)\b", c)), "")
                print(f"  | {lines[i][:300]}\n  |   {cause[:300]}")

    done = [r for r in results if r.status == "finalized"]
    lat = sorted(r.latency_s for r in done if r.latency_s is not None)
    p50 = median(lat)
    p95 = lat[min(len(lat) - 1, int(0.95 * len(lat)))] if lat else float("nan")
    print(
        f"ours (run_batch + {args.workers} workers, {args.stack}): {len(done)}/{args.tasks} finalized in {ours:.2f}s; "
        f"latency p50 {p50:.2f}s p95 {p95:.2f}s"
    )
    if lat:
        deciles = " ".join(f"{lat[min(len(lat) - 1, len(lat) * k // 10)]:.2f}" for k in range(11))
        print(f"latency deciles (min..max): {deciles}")
    winners = Counter((r.provider or "?").lower() for r in done)
    print("tasks won by provider: " + ", ".join(f"{p[:10]} {n}" for p, n in winners.most_common()))
    print("Completed provider flow runs by queue: " + ", ".join(f"{q[:19]} {n}" for q, n in by_queue.most_common()))
    print(f"provider flow runs at the end: {states}")

    def show(title: str, parts: dict[str, float], wall: float, machine: float) -> None:
        total = sum(parts.values())
        print(
            f"CPU seconds, {title} ({wall:.1f}s of wall on {os.cpu_count()} CPUs, {total:.1f} CPU-s used, "
            f"{max(machine - total, 0):.1f} by other work): {parts_text(parts)}"
        )

    show("chain floor", cpu_chain, chain_s, machine_floors[0])
    show("service floor", cpu_service, service_s, machine_floors[1])
    show("ours", cpu, ours, busy)
    print(
        f"the whole machine meanwhile: {busy:.1f} CPU-s busy, of which {max(busy - sum(cpu.values()), 0):.1f} "
        f"by other work (load average {load0:.1f} before, {load1:.1f} after)"
    )
    print(f"chain floor {chain_s:.2f}s, service floor {service_s:.2f}s, ours {ours:.2f}s")
    print(
        f"one task: chain floor {median(one_chain):.3f}s, service floor {median(one_service):.3f}s, "
        f"ours (publish to result) {idle_s:.3f}s"
    )
    lag_text = f"{lag:.1f}s" if lag != float("inf") else f"not within {args.records_timeout:.0f}s"
    print(f"provider flow runs recorded {lag_text} after the batch returned")
    stored_total = sum(stored.values())
    dropped = emitted - stored_total + queue_full
    print(
        f"events: emitted {emitted} (client {mine}; workers {workers}); stored {stored_total} "
        f"({dict(sorted(stored.items()))}); 'Subscription queue is full' lines {queue_full}"
    )
    print(
        f"floor_ratio={ours / chain_s:.2f} service_floor_ratio={ours / service_s:.2f} "
        f"records_lag_s={lag:.1f} events_dropped={dropped} p95_s={p95:.2f} idle_latency_s={idle_s:.3f}"
    )


def events_mod_flush() -> None:
    from ogpu_prefect import events

    events.sender().flush(30.0)


if __name__ == "__main__":
    main()
