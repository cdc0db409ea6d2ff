"""Prefect economy and truthful records (issue 23): N FIRST_RESPONSE echo tasks through `run_batch`
and W `ogpu-provider` workers (records: tasks, the default), as bench/e2e.py runs them, with a
counting, rate-limiting proxy (tests/prefectproxy.py) between every process of ours (the client's
flow, its event sender, the workers) and the Prefect API: HTTP and the events websocket both go
through it and are counted.

Four batches of N tasks on the same warm fleet:
1. unlimited: the API requests and the log lines + events the batch cost (requests counted by the
   proxy from the batch's start until its records are written; log lines counted by the proxy;
   events counted by the server, so that the run-state events Prefect's server emits itself
   count too), the records' lag after the batch, and whether every provider task run's start and
   end are within 1 s of its attempt's and response's block times (read back from the API);
2. two limited as Prefect Cloud's Hobby tier (250 requests and 500 log lines + events a minute,
   fresh windows for each), then one unlimited again: W is the limited pair's walls over the
   unlimited pair's around them (A B B A, so that the chain's and the fleet's growth from batch
   to batch weighs on both alike). The records may lag; the money path must not. Each batch starts
   once the one before has its records written (the limits lifted after a limited batch), so that
   none starts under another's deferred writes.
Then, with the limits lifted, every event the client and workers emitted must be stored, and
every response on chain by our providers must have its Completed task run. Each batch is watched
for chain stalls (no block for 5 s or more with transactions pending: anvil's, see BENCHMARKS.md);
the bench names the batches that had one, since their walls then measure anvil, not the limit.

    .venv/bin/python bench/economy.py --tasks 1000 --workers 2 --stack production [--smoke]

Ends with `api_requests_per_task=X writes_per_task=Y records_lag_s=Z true_times=0|1 events_lost=N
records_lost=N limited_wall_ratio=W`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _prefect_api import (  # noqa: E402
    cpu_by_part,
    cpu_seconds,
    parts_text,
    postmaster_pid,
    prefect_api,
    sender_counts,
    wait_stored,
)
from _smoke import parse_args  # noqa: E402
from _workdir import workdir  # noqa: E402
from e2e import PAY, PROVIDERS, OwnKeys, bench_fleet, wait_services  # noqa: E402

from tests.prefectproxy import PrefectProxy  # noqa: E402


def use_api(url: str) -> None:
    """Points this process (and the processes it starts, and threads without a context) at `url`."""
    from prefect.context import refresh_global_settings_context

    os.environ["PREFECT_API_URL"] = url
    refresh_global_settings_context()


def stored_events_total(since: float, until: float) -> int:
    """Every event the server stored that occurred in [since, until], whatever its name."""
    from datetime import UTC, datetime

    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventOccurredFilter

    flt = EventFilter(
        occurred=EventOccurredFilter(since=datetime.fromtimestamp(since, UTC), until=datetime.fromtimestamp(until, UTC))
    )
    with get_client(sync_client=True) as c:
        rows = c.request(
            "POST",
            "/events/count-by/event",  # type: ignore[arg-type]
            json={"filter": flt.model_dump(mode="json"), "time_unit": "day", "time_interval": 1.0},
        ).json()
    return sum(int(r["count"]) for r in rows)


def stored_provider_task_run_events(since: float) -> int:
    """The workers' `prefect.task-run.*` events (tagged ogpu-provider) the server stored since `since`."""
    from datetime import UTC, datetime, timedelta

    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventRelatedFilter

    flt = EventFilter(
        occurred=EventOccurredFilter(
            since=datetime.fromtimestamp(since, UTC), until=datetime.now(UTC) + timedelta(hours=1)
        ),
        event=EventNameFilter(prefix=["prefect.task-run."]),
        related=EventRelatedFilter(id=["prefect.tag.ogpu-provider"]),
    )
    with get_client(sync_client=True) as c:
        rows = c.request(
            "POST",
            "/events/count-by/event",  # type: ignore[arg-type]
            json={"filter": flt.model_dump(mode="json"), "time_unit": "day", "time_interval": 1.0},
        ).json()
    return sum(int(r["count"]) for r in rows)


def provider_task_runs(since: float, tasks: set[str] | None = None) -> list[Any]:
    """The workers' task runs (tag ogpu-provider) that started after `since`."""
    from datetime import UTC, datetime

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterStartTime, TaskRunFilterTags

    flt = TaskRunFilter(
        tags=TaskRunFilterTags(all_=["ogpu-provider"]),
        start_time=TaskRunFilterStartTime(after_=datetime.fromtimestamp(since, UTC)),
    )
    out: list[Any] = []
    with get_client(sync_client=True) as c:
        while True:
            page = c.read_task_runs(task_run_filter=flt, limit=200, offset=len(out))
            out += page
            if len(page) < 200:
                return [r for r in out if tasks is None or r.dynamic_key.lower() in tasks]


def chain_times(
    chain: Any, first_block: int, providers: set[str], tasks: set[str]
) -> tuple[dict[tuple[str, str], float], ...]:
    """(task, provider) -> block time of its Attempted, and of its ResponseSubmitted, for `tasks`."""
    attempts = [
        e
        for e in chain.cursor(["Attempted"], first_block).poll()
        if e["provider"].lower() in providers and e["task"].lower() in tasks
    ]
    submitted = chain.cursor(["ResponseSubmitted"], first_block).poll()
    params = chain.read_many([chain.response(e["response"]).read.get_response_params() for e in submitted])
    blocks = sorted({e.block_number for e in attempts} | {e.block_number for e in submitted})
    found = chain.rpc.batch([("eth_getBlockByNumber", [hex(b), False]) for b in blocks])
    stamp = {b: float(int(r["timestamp"], 16)) for b, r in zip(blocks, found)}
    attempted = {(e["task"].lower(), e["provider"].lower()): stamp[e.block_number] for e in attempts}
    responded = {
        (p.task.lower(), p.provider.lower()): stamp[e.block_number]
        for e, p in zip(submitted, params)
        if p.provider.lower() in providers and p.task.lower() in tasks
    }
    return attempted, responded


def records_done(since: float, responses: int, timeout: float, tasks: set[str]) -> tuple[float, list[Any]]:
    """Seconds until the workers' task runs since `since` record `responses` Completed and none
    is left Running; and those runs."""
    t0 = time.perf_counter()
    while True:
        runs = provider_task_runs(since, tasks)
        states = [r.state_type.value if r.state_type else "" for r in runs]
        if states.count("COMPLETED") >= responses and "RUNNING" not in states:
            return time.perf_counter() - t0, runs
        if time.perf_counter() - t0 > timeout:
            from collections import Counter

            print(f"  records after {timeout:.0f}s: {Counter(states)} of {responses} responses on chain")
            for r in [r for r in runs if r.state_type and r.state_type.value != "COMPLETED"][:5]:
                print(f"    {r.name} {r.dynamic_key[:12]} {r.state_type.value} {r.state.message if r.state else ''}")
            return float("inf"), runs
        time.sleep(0.5)


def true_times(runs: list[Any], attempted: dict[Any, float], responded: dict[Any, float]) -> int:
    """1 when every provider task run starts within 1 s of its attempt's block and every
    Completed one ends within 1 s of its response's block."""
    bad = 0
    for r in runs:
        provider = next((t.split(":", 1)[1].lower() for t in r.tags if t.startswith("provider:")), "")
        key = (r.dynamic_key.lower(), provider)
        start_ok = key in attempted and r.start_time and abs(r.start_time.timestamp() - attempted[key]) <= 1.0
        end_ok = r.state_type.value != "COMPLETED" or (
            key in responded and r.end_time and abs(r.end_time.timestamp() - responded[key]) <= 1.0
        )
        if not (start_ok and end_ok):
            bad += 1
            if bad <= 5:
                a, b = attempted.get(key), responded.get(key)
                print(
                    f"    {r.dynamic_key[:12]} {r.state_type.value}: start {r.start_time} (attempt block {a}), "
                    f"end {r.end_time} (response block {b})"
                )
    if bad:
        print(f"  {bad} of {len(runs)} task runs are not within 1 s of their blocks")
    return int(bad == 0 and bool(runs))


class StallWatch:
    """The longest time the chain made no block while its pool held transactions, or did not
    answer, over a batch (0.5 s samples on a connection of its own). anvil 1.7.1's automine can stall so, one core
    busy, for ~30 s at a time (BENCHMARKS.md): a batch it hits says nothing of Prefect's limits."""

    def __init__(self, rpc_url: str) -> None:
        import threading

        from ogpu_prefect.chain.rpc import Rpc

        self.rpc = Rpc(rpc_url, timeout=60)
        self.longest = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stall-watch", daemon=True)

    def __enter__(self) -> StallWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=70)

    def _run(self) -> None:
        last, since = -1, time.monotonic()
        while not self._stop.wait(0.5):
            asked = time.monotonic()
            try:
                block, pool = self.rpc.batch([("eth_blockNumber", []), ("txpool_status", [])])
                block, pending = int(block, 16), int(pool["pending"], 16) + int(pool["queued"], 16)
            except Exception:  # noqa: BLE001 - a sample lost is a sample lost
                continue
            now = time.monotonic()
            # A stalled anvil can also leave requests unanswered for tens of seconds: that counts.
            self.longest = max(self.longest, now - asked)
            if block != last or not pending:
                last, since = block, now
            self.longest = max(self.longest, now - since)


STALL_S = 5.0


def batch(source: str, n: int, tag: str) -> tuple[float, int, set[str]]:
    """run_batch of `n` echo tasks: (wall, finalized, every task it published)."""
    from ogpu_prefect.flows.run_batch import run_batch

    t0 = time.perf_counter()
    results = run_batch(
        source,
        [{"text": f"{tag}{i}"} for i in range(n)],
        PAY,
        "e2e-net",
        "e2e-client",
        "e2e-store",
        function_name="echo",
        task_timeout=900,
        poll_interval=0.1,
    )
    wall = time.perf_counter() - t0
    return wall, sum(r.status == "finalized" for r in results), {t.lower() for r in results for t in r.tasks}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2, choices=range(1, len(PROVIDERS) + 1))
    ap.add_argument("--stack", choices=("sqlite", "production"), default="production")
    ap.add_argument("--requests-per-min", type=int, default=250)
    ap.add_argument("--writes-per-min", type=int, default=500)
    ap.add_argument("--records-timeout", type=float, default=300.0)
    ap.add_argument("--trace", action="store_true", help="print each batch's first requests, timed")
    args = parse_args(ap, tasks=6, workers=1, stack="sqlite", records_timeout=60.0)

    from ogpu_prefect.blocks import OGPUWallet
    from ogpu_prefect.chain import devnet as devnet_mod
    from ogpu_prefect.chain.connection import Chain
    from ogpu_prefect.storage import LocalStore

    roles = PROVIDERS[: args.workers]
    with workdir("bench-economy-") as tmp:
        net = devnet_mod.start()
        fleet = None
        try:
            with prefect_api(tmp, args.stack) as info, LocalStore(tmp / "payloads") as store:
                upstream = info.api_url
                with PrefectProxy(upstream) as proxy:
                    use_api(proxy.url)
                    from prefect.settings import PREFECT_API_URL, temporary_settings

                    with temporary_settings({PREFECT_API_URL: proxy.url}):
                        own = OwnKeys(net, roles)
                        fleet = bench_fleet(own, store, tmp)
                        chain = Chain(net.network)
                        addr = {r: own.address(r).lower() for r in roles}
                        source = fleet.publish_source()
                        began = time.time()
                        fleet.create_pool(
                            "e2e", [source], wallet_block=f"e2e-{roles[0]}", max_concurrent_tasks=64, records="tasks"
                        )
                        for role in roles:
                            fleet.start_worker("e2e", role)
                        for role in roles:
                            fleet.wait_registered(source, role, timeout=180)
                        wait_services(own, roles)
                        OGPUWallet(private_key=net.key("client")).save("e2e-client", overwrite=True)
                        batch(source, 1, "warm")  # the client's flow and the sessions exist
                        time.sleep(3)

                        # 1. unlimited
                        proxy.reset()
                        if args.trace:
                            proxy.trace = []
                        since, first = time.time(), chain.block_number()
                        cpu0 = cpu_seconds(postmaster_pid(tmp))
                        with StallWatch(net.rpc_url) as watch:
                            wall, finalized, tasks_a = batch(source, args.tasks, "a")
                        stalls = {"a": watch.longest}
                        cpu_a = parts_text(cpu_by_part(cpu0, cpu_seconds(postmaster_pid(tmp))))
                        blocks_a = chain.block_number() - first
                        attempted, responded = chain_times(chain, first, set(addr.values()), tasks_a)
                        with temporary_settings({PREFECT_API_URL: upstream}):  # the bench's reads: not counted
                            lag, runs = records_done(since - 2, len(responded), args.records_timeout, tasks_a)
                            metering = proxy.reset()
                            events_written = stored_events_total(since, time.time())
                        truthful = true_times(runs, attempted, responded)
                        logs = metering.writes["log"]
                        requests = metering.total_requests()
                        print(
                            f"unlimited: {finalized}/{args.tasks} finalized in {wall:.2f}s; records {lag:.1f}s later; "
                            f"{requests} API requests ({json.dumps(dict(metering.requests.most_common(12)))}); "
                            f"{logs} log lines, {events_written} events stored; proxy writes {dict(metering.writes)}; "
                            f"CPU s: {cpu_a}; {blocks_a} blocks; longest chain stall {stalls['a']:.1f}s",
                            flush=True,
                        )

                        # 2. limited (Prefect Cloud Hobby), twice, then unlimited again: each batch runs on
                        # a chain and a fleet one batch older than the last (anvil slows as its state
                        # grows: two unlimited batches in a row differ by ~8%), so the limited pair's
                        # walls are set against the unlimited pair around them (A B B A).
                        later: list[tuple[str, float, int]] = []  # (batch, wall, records missing)
                        for tag, limit in (("b", True), ("c", True), ("d", False)):
                            if limit:  # fresh windows for each limited batch
                                proxy.limit(args.requests_per_min, args.writes_per_min)
                            since_x, first_x, t_x = time.time(), chain.block_number(), time.monotonic()
                            cpu0 = cpu_seconds(postmaster_pid(tmp))
                            with StallWatch(net.rpc_url) as watch:
                                wall_x, finalized_x, tasks_x = batch(source, args.tasks, tag)
                            stalls[tag] = watch.longest
                            cpu = parts_text(cpu_by_part(cpu0, cpu_seconds(postmaster_pid(tmp))))
                            limited = proxy.reset()
                            proxy.limit(None, None)
                            name = (
                                f"limited ({args.requests_per_min} requests, {args.writes_per_min} writes a minute)"
                                if limit
                                else "unlimited again"
                            )
                            print(
                                f"{name}: {finalized_x}/{args.tasks} finalized in {wall_x:.2f}s; "
                                f"{sum(limited.refused.values())} requests answered 429 "
                                f"({dict(limited.refused.most_common(6))}); "
                                f"websocket events held {limited.held_s:.1f}s; requests "
                                f"{dict(limited.requests.most_common(8))}; CPU s: {cpu}; "
                                f"{chain.block_number() - first_x} blocks; longest chain stall {watch.longest:.1f}s",
                                flush=True,
                            )
                            if proxy.trace is not None:
                                first = [x for x in proxy.trace if t_x <= x[0] < t_x + 6.0]
                                print(
                                    f"  {name}, its first 6 s: "
                                    + "; ".join(f"+{s0 - t_x:.2f} {r} {st} {d * 1000:.0f}ms" for s0, d, r, st in first)
                                )
                            _, responded_x = chain_times(chain, first_x, set(addr.values()), tasks_x)
                            # Its records, with the limits lifted, before the next batch starts: each
                            # batch starts on a quiet API, as the first did (a limited batch's deferred
                            # writes would otherwise land on the next one).
                            with temporary_settings({PREFECT_API_URL: upstream}):
                                lag_x, runs_x = records_done(
                                    since_x - 2, len(responded_x), args.records_timeout, tasks_x
                                )
                            completed_x = sum(r.state_type.value == "COMPLETED" for r in runs_x)
                            print(f"  its records {lag_x:.1f}s after it (limits lifted)", flush=True)
                            later.append((tag, wall_x, len(responded_x) - completed_x))
                            proxy.reset()  # the records' writes are not the next batch's

                        # 3. nothing lost
                        records_lost = max(len(responded) - sum(r.state_type.value == "COMPLETED" for r in runs), 0)
                        records_lost += sum(max(x[2], 0) for x in later)
                        wall_b, wall_c, wall_d = (x[1] for x in later)
                        limited_ratio = (wall_b + wall_c) / (wall + wall_d)
                        for role in roles:  # workers flush their events on a clean stop
                            fleet.stop(role)
                        from ogpu_prefect import events

                        events.sender().flush(120.0)
                        mine = sender_counts()
                        workers = {r: json.loads((tmp / f"events-{r}.json").read_text()) for r in roles}
                        emitted = sum(c["sent"] + c["dropped"] + c["unsent"] for c in [mine, *workers.values()])
                        with temporary_settings({PREFECT_API_URL: upstream}):
                            stored = wait_stored(began, emitted)
                            stored["prefect.task-run.* (workers)"] = stored_provider_task_run_events(began)
                        events_lost = emitted - sum(stored.values())
                        print(
                            f"events emitted {emitted} "
                            f"(client {mine}; workers {workers}), stored {sum(stored.values())} {stored}",
                            flush=True,
                        )
        finally:
            for role in list(fleet.procs) if fleet is not None else []:
                fleet.stop(role)
            net.stop()
    stalled = {k: round(v, 1) for k, v in stalls.items() if v >= STALL_S}
    walls = f"{wall:.1f} s, {wall_b:.1f} s, {wall_c:.1f} s, {wall_d:.1f} s"
    if stalled:
        print(f"the chain stalled (no block for >= {STALL_S:.0f} s, transactions pending) in batch(es) {stalled}: ")
        print(f"  W below is anvil's, not the limit's (walls A B B A: {walls})")
    else:
        print(f"no chain stall in any batch (walls A B B A: {walls})")
    print(
        f"api_requests_per_task={requests / args.tasks:.2f} writes_per_task={(logs + events_written) / args.tasks:.2f} "
        f"records_lag_s={lag:.1f} true_times={truthful} events_lost={events_lost} records_lost={records_lost} "
        f"limited_wall_ratio={limited_ratio:.2f}"
    )


if __name__ == "__main__":
    main()
