"""The real chain's conditions: `run_batch` of N FIRST_RESPONSE tasks (default 1,000) served by W
stand-in providers (tests/provider_sim.py, real attempt and submit transactions, polling every
0.25 s as the worker does by default, attempting and answering on two threads as the worker's
watcher and responder do) in a process of their own, on a devnet that mines a block
every second under a 30M gas limit, every process talking to anvil through a metered-endpoint
proxy (tests/rpcproxy.py, in a process of its own) that adds an 80 ms round trip and counts every
call, by method and by role (`client`, `worker1`, ...). Run twice on one devnet and Prefect stack:

1. unlimited: the proxy refuses nothing; gives the call mix, and the wall against the gas floor
   (the batch's gas, every transaction mined meanwhile, at 30M per block: blocks x block time);
2. at `--limit` calls/s (50), each call in a batch counting, 429 + Retry-After past it: each
   process is given its share of the limit as its network's `rate_limit` (the share of the calls
   its role made in run 1: on the real network each party has its own endpoint and key); the wall
   against the rate floor (the calls it made / the limit).

    .venv/bin/python bench/realnet.py [--tasks 1000] [--workers 2] [--limit 50] [--smoke]

Ends with `finalized=<min of both runs> tasks=N calls_per_task=X http_per_task=Y rejected_share=Z
wall_vs_gas_floor=A wall_vs_rate_floor=B` (X, Y, Z: the limited run; A: the unlimited run; B: the
limited run). `--smoke`: 4 tasks, the same path, under a minute. `--timeline`: each block of a run,
its transactions by kind and how full it was (where the wall goes); `--unlimited-only`: run 1 alone.
bench/realnet_workers.py runs the same chain with real `ogpu-provider` workers.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import multiprocessing as mp
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _prefect_api import prefect_api  # noqa: E402
from _workdir import workdir  # noqa: E402

from ogpu_prefect.chain.connection import Chain  # noqa: E402
from ogpu_prefect.chain.network import Network  # noqa: E402
from tests.rpcproxy import Metering, ProxyProcess  # noqa: E402

PAY = 10**15


@dataclasses.dataclass
class Run:
    name: str
    tasks: int
    finalized: int
    wall_s: float
    gas: int
    blocks: int
    metering: Metering

    @property
    def calls(self) -> int:
        return self.metering.total_calls()

    @property
    def http(self) -> int:
        return sum(self.metering.http.values())

    @property
    def rejected_share(self) -> float:
        return self.metering.total_rejected() / max(1, self.calls)


def serve(
    networks: list[Network], keys: list[str], source: str, from_block: int, store_root: str, url: str, stop
) -> None:  # type: ignore[no-untyped-def]
    """The stand-in providers, each on its own role's URL (and share of the limit)."""
    from ogpu_prefect.storage import FsspecStore
    from tests.provider_sim import SimProvider

    store = FsspecStore(f"file://{store_root}", url)
    # Each takes its share of the tasks (by address), as the real workers mostly do: they try
    # untouched tasks first, in random order (worker/watcher.py choose_offers). Stand-ins that all
    # attempted every task made the losers' attempts and submissions revert: calls no real fleet makes.
    w = len(keys)

    def share(i: int) -> Any:
        return lambda task: int(task, 16) % w == i

    sims = [
        SimProvider(n, k, [source], store, from_block=from_block, poll_interval=0.25, take=share(i), pipelined=True)
        for i, (n, k) in enumerate(zip(networks, keys))
    ]
    for s in sims:
        s.start()
    stop.wait()
    for s in sims:
        s.stop()
    errors = [e for s in sims for e in s.errors]
    if errors:
        print(f"  stand-in providers: {len(errors)} errors, first: {errors[0]}", flush=True)


def batch_gas(direct: Chain, first: int, last: int) -> int:
    """Gas used by every block in [first, last] (read past the proxy: not counted)."""
    blocks = direct.rpc.batch([("eth_getBlockByNumber", [hex(b), False]) for b in range(first, last + 1)])
    return sum(int(b["gasUsed"], 16) for b in blocks)


def timeline(direct: Chain, first: int, last: int, t0_unix: float) -> None:
    """Per block of [first, last]: seconds since the batch began (block timestamps), the batch's
    transactions by kind and the share of the block gas they used (read past the proxy)."""
    from ogpu_prefect.chain.structs import ResponseParams, TaskParams

    zero = "0x" + "00" * 20
    kinds = {
        direct.controller.publish_task(TaskParams(zero, "", 0, 0)).data[:4].hex(): "publish",
        direct.nexus.attempt(zero, zero, 0).data[:4].hex(): "attempt",
        direct.nexus.submit_response(ResponseParams(zero, zero, "", 0)).data[:4].hex(): "submit",
    }
    blocks = direct.rpc.batch([("eth_getBlockByNumber", [hex(b), True]) for b in range(first, last + 1)])
    for b in blocks:
        counts = Counter(kinds.get(t["input"][2:10], "other") for t in b["transactions"])
        print(
            f"  block {int(b['number'], 16)} t={int(b['timestamp'], 16) - t0_unix:+5.1f}s "
            f"gas {int(b['gasUsed'], 16) / int(b['gasLimit'], 16):4.0%} "
            + " ".join(f"{k} {v}" for k, v in sorted(counts.items())),
            flush=True,
        )


def one_run(name: str, ctx: dict[str, Any], limit: float | None, shares: dict[str, float] | None) -> Run:
    from ogpu_prefect.blocks import OGPUNetwork
    from ogpu_prefect.flows.run_batch import run_batch

    proxy: ProxyProcess = ctx["proxy"]
    direct: Chain = ctx["direct"]
    n, roles = ctx["tasks"], ["client"] + [f"worker{i + 1}" for i in range(len(ctx["provider_keys"]))]

    def network(role: str) -> Network:
        rate = None if limit is None or shares is None else limit * shares.get(role, 0.05)
        return dataclasses.replace(direct.network, rpc_url=proxy.url_for(role), rate_limit=rate)

    if limit is not None:
        print(f"[{name}] shares of {limit:g} calls/s: " + ", ".join(f"{r} {network(r).rate_limit:.1f}" for r in roles))
    stop = mp.get_context("fork").Event()
    block0 = direct.block_number()
    providers = mp.get_context("fork").Process(
        target=serve,
        args=(
            [network(r) for r in roles[1:]],
            ctx["provider_keys"],
            ctx["source"],
            block0,
            ctx["store_root"],
            ctx["store_url"],
            stop,
        ),
    )
    providers.start()
    before = proxy.metering()
    t0, t0_unix = time.perf_counter(), time.time()
    try:
        results = run_batch(
            ctx["source"],
            [{"i": i, "run": name} for i in range(n)],
            PAY,
            OGPUNetwork.from_network(network("client")),
            ctx["wallet"],
            ctx["storage"],
            function_name="echo",
            task_timeout=3600,
            batch_key=f"realnet-{name}-{block0}",
        )
        wall = time.perf_counter() - t0
        metering = proxy.metering().minus(before)
    finally:
        stop.set()
        providers.join(timeout=90)
    block1 = direct.block_number()
    run = Run(
        name,
        n,
        sum(r.status == "finalized" for r in results),
        wall,
        batch_gas(direct, block0 + 1, block1),
        block1 - block0,
        metering,
    )
    report(run, limit)
    if ctx["timeline"]:
        timeline(direct, block0 + 1, block1, t0_unix)
    return run


def report(run: Run, limit: float | None) -> None:
    m, n = run.metering, run.tasks
    print(
        f"[{run.name}] {run.finalized}/{n} finalized in {run.wall_s:.1f}s, {run.blocks} blocks, "
        f"gas {run.gas:,} ({run.gas / n:,.0f}/task); {run.calls} calls ({run.calls / n:.1f}/task), "
        f"{run.http} HTTP requests ({run.http / n:.1f}/task), {m.total_rejected()} calls rejected "
        f"({run.rejected_share:.2%})" + (f", limit {limit:g} calls/s" if limit else ""),
        flush=True,
    )
    by_method = m.by_method()
    print(f"[{run.name}]   calls/task by method: " + ", ".join(f"{k} {v / n:.2f}" for k, v in by_method.most_common()))
    for role in sorted(m.calls):
        calls = m.calls[role]
        print(
            f"[{run.name}]   {role}: {sum(calls.values()) / n:.2f} calls/task, {m.http[role] / n:.2f} HTTP/task, "
            f"rejected {m.total_rejected(role)}; " + ", ".join(f"{k} {v / n:.2f}" for k, v in calls.most_common(6)),
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2, choices=(1, 2, 3))
    ap.add_argument("--limit", type=float, default=50.0, help="calls/s of the limited run")
    ap.add_argument("--rtt", type=float, default=0.08, help="round trip added to every request, seconds")
    ap.add_argument("--block-time", type=float, default=1.0)
    ap.add_argument("--gas-limit", type=int, default=30_000_000)
    ap.add_argument("--timeline", action="store_true", help="print each block's transactions by kind")
    ap.add_argument("--unlimited-only", action="store_true", help="the first run only (no rate floor)")
    ap.add_argument("--smoke", action="store_true", help="4 tasks: the same path in under a minute")
    args = ap.parse_args()
    if args.smoke:
        args.tasks = 4

    from ogpu_prefect.blocks import OGPUStorage, OGPUWallet
    from ogpu_prefect.chain import devnet as devnet_mod
    from ogpu_prefect.client import OGPUClient
    from ogpu_prefect.models import SourceSpec
    from ogpu_prefect.storage import LocalStore

    with workdir("bench-realnet-") as tmp:
        net = devnet_mod.start(block_time=args.block_time, gas_limit=args.gas_limit)
        try:
            with (
                prefect_api(tmp, "sqlite"),
                LocalStore(tmp / "payloads") as store,
                ProxyProcess(net.rpc_url, delay_s=args.rtt) as proxy,
            ):
                direct = Chain(net.network)
                source = OGPUClient(direct, net.key("client"), store).publish_source(
                    SourceSpec(
                        name="realnet",
                        cpu="http://127.0.0.1:9/c.yml",
                        min_payment=PAY,
                        min_available_lockup=10**18,
                        max_expiry_duration=3600,
                        delivery_method="FIRST_RESPONSE",
                    )
                )
                keys = [net.key(f"provider{i + 1}") for i in range(args.workers)]
                for key in keys:
                    s = direct.sender(key)
                    s.transact(direct.nexus.register(source, s.address, 1))
                ctx = {
                    "proxy": proxy,
                    "direct": direct,
                    "tasks": args.tasks,
                    "provider_keys": keys,
                    "source": source,
                    "store_root": str(store.root.resolve()),
                    "store_url": store.base_url,
                    "wallet": OGPUWallet(private_key=net.key("client")),
                    "timeline": args.timeline,
                    "storage": OGPUStorage(write_url=f"file://{store.root.resolve()}", read_url=store.base_url),
                }
                free = one_run("unlimited", ctx, None, None)
                if args.unlimited_only:
                    print(f"gas floor {max(1, math.ceil(free.gas / args.gas_limit)) * args.block_time:.0f}s")
                    return
                by_role = Counter({r: sum(c.values()) for r, c in free.metering.calls.items()})
                shares = {r: c / max(1, sum(by_role.values())) for r, c in by_role.items()}
                proxy.set_limit(args.limit)
                limited = one_run("limited", ctx, args.limit, shares)
        finally:
            net.stop()
    gas_floor = max(1, math.ceil(free.gas / args.gas_limit)) * args.block_time
    rate_floor = limited.calls / args.limit
    print(
        f"gas floor {gas_floor:.0f}s ({free.gas:,} gas at {args.gas_limit:,}/block), "
        f"rate floor {rate_floor:.0f}s ({limited.calls} calls at {args.limit:g}/s)"
    )
    finalized = min(free.finalized, limited.finalized)
    print(
        f"finalized={finalized} tasks={args.tasks} calls_per_task={limited.calls / args.tasks:.1f} "
        f"http_per_task={limited.http / args.tasks:.1f} rejected_share={limited.rejected_share:.4f} "
        f"wall_vs_gas_floor={free.wall_s / gas_floor:.2f} wall_vs_rate_floor={limited.wall_s / rate_floor:.2f}"
    )
    if finalized != args.tasks:
        sys.exit(1)


if __name__ == "__main__":
    main()
