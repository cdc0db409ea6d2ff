"""Client-side scaling: `run_batch` publishing and awaiting FIRST_RESPONSE batches (default 1,000
and 10,000 tasks) on the devnet, under a Prefect server stack (ogpu_prefect/stack.py: `sqlite`, or
`production`: PostgreSQL + Redis + API server(s) + one services process). The tasks are served by
stand-in providers (tests/provider_sim.py: real attempt and submit transactions) in a separate
process, so the client process' peak memory is the flow's own.

Before each batch, on the same devnet, the chain-only floor (bench/_floors.py: the same publish,
attempt and submit transactions through the chain layer, two providers, no Prefect) runs the same
number of tasks in a spawned process (its memory is not the client's): the floor's own growth
from 1,000 to 10,000 tasks is anvil's, so ours/floor at each size separates the project's growth
from the node's. After each batch it compares the `ogpu.` events the client emitted during it
(its sender's counters) with those the server stored.

    .venv/bin/python bench/scaling.py [--sizes 1000,10000] [--stack production] [--profile] [--smoke]

Each batch prints the CPU seconds of every part of the run (client, stand-in providers, Prefect
API and services, PostgreSQL, Redis, anvil) from /proc; `--profile` adds a py-spy profile of the
client, the stand-in providers and the Prefect servers in the largest batch (bench/_profile.py).

Ends with `peak_mb_10k=<the client process' maximum RSS, MB, by the end of the largest batch
(imports included)> growth_vs_floor=<(ours/floor) at the largest size / (ours/floor) at 1,000 (or
the smallest size)> events_dropped_10k=<emitted - stored + 'Subscription queue is full' lines, in
the largest batch>`.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _floors import chain_floor, stand_providers  # noqa: E402
from _prefect_api import (  # noqa: E402
    cpu_by_part,
    cpu_seconds,
    parts_text,
    postmaster_pid,
    prefect_api,
    queue_full_lines,
    sender_counts,
    server_pids,
    wait_stored,
)
from _profile import start_profilers, stop_profilers  # noqa: E402
from _smoke import parse_args  # noqa: E402
from _workdir import workdir  # noqa: E402

from ogpu_prefect.chain.connection import Chain  # noqa: E402

PAY = 10**15
ROLES = ["provider1", "provider2"]


def serve(profile: dict, source: str, roles: list[str], from_block: int, store_root: str, stop) -> None:  # type: ignore[no-untyped-def]
    from ogpu_prefect.chain.devnet import DEV_KEYS, ROLES
    from ogpu_prefect.chain.network import Network
    from ogpu_prefect.storage import FsspecStore
    from tests.provider_sim import SimProvider

    network = Network.from_profile(profile)
    store = FsspecStore(f"file://{store_root}", profile["payload_url"])
    sims = [SimProvider(network, DEV_KEYS[ROLES.index(r)], [source], store, from_block=from_block) for r in roles]
    for s in sims:
        s.start()
    stop.wait()
    for s in sims:
        s.stop()
        if s.errors:  # e.g. receipts that waited out their timeout: a stall in the run's wall
            print(f"stand-in provider {s.address}: {len(s.errors)} error(s), first: {s.errors[0]}", flush=True)


def floor_child(profile: dict, store_root: str, n: int, out: Any) -> None:  # type: ignore[type-arg]
    """The chain floor for `n` tasks on a source of its own, in a spawned process; sends its seconds."""
    from ogpu_prefect.chain.devnet import DEV_KEYS
    from ogpu_prefect.chain.devnet import ROLES as DEV_ROLES
    from ogpu_prefect.chain.network import Network
    from ogpu_prefect.client import OGPUClient
    from ogpu_prefect.models import SourceSpec
    from ogpu_prefect.storage import FsspecStore

    network = Network.from_profile(profile)
    store = FsspecStore(f"file://{store_root}", profile["payload_url"])
    client_key = DEV_KEYS[DEV_ROLES.index("client")]
    keys = {r: DEV_KEYS[DEV_ROLES.index(r)] for r in ROLES}
    source = OGPUClient(Chain(network), client_key, store).publish_source(
        SourceSpec(
            name="floor",
            cpu="http://127.0.0.1:9/c.yml",
            min_payment=PAY,
            min_available_lockup=10**18,
            max_expiry_duration=3600,
            delivery_method="FIRST_RESPONSE",
        )
    )
    stand_providers(network, keys, source)
    out.send(chain_floor(network, client_key, list(keys.values()), store, source, n))
    out.close()


def run_floor(profile: dict, store_root: str, n: int) -> float:
    ctx = mp.get_context("spawn")
    mine, theirs = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=floor_child, args=(profile, store_root, n, theirs))
    proc.start()
    theirs.close()
    try:
        return float(mine.recv())
    finally:
        proc.join(timeout=60)


def show_cpu(n: int, what: str, cpu: dict[str, float]) -> None:
    total = sum(cpu.values())
    print(f"{n:>6} tasks: CPU seconds in {what} ({total:.1f} on {os.cpu_count()} CPUs): {parts_text(cpu)}", flush=True)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--stack", choices=("sqlite", "production"), default="production")
    ap.add_argument("--servers", type=int, default=1, help="API servers of the production stack")
    ap.add_argument("--profile", action="store_true", help="py-spy the client, providers and servers (largest batch)")
    ap.add_argument("--profile-rate", type=int, default=50)
    ap.add_argument("--profile-dir", type=Path, default=Path("/tmp"), help="where py-spy's raw profiles are kept")
    args = parse_args(ap, sizes="5", stack="sqlite")
    sizes = [int(x) for x in args.sizes.split(",")]

    from ogpu_prefect import events
    from ogpu_prefect.blocks import OGPUNetwork, OGPUStorage, OGPUWallet
    from ogpu_prefect.chain import devnet as devnet_mod
    from ogpu_prefect.client import OGPUClient
    from ogpu_prefect.flows.run_batch import run_batch
    from ogpu_prefect.models import SourceSpec
    from ogpu_prefect.storage import LocalStore

    with workdir("bench-scaling-") as tmp:
        net = devnet_mod.start()
        times: dict[int, float] = {}
        floors: dict[int, float] = {}
        peaks: dict[int, float] = {}
        dropped: dict[int, int] = {}
        try:
            with prefect_api(tmp, args.stack, args.servers), LocalStore(tmp / "payloads") as store:
                print(f"stack {args.stack}", flush=True)
                chain = Chain(net.network)
                network, wallet = OGPUNetwork.from_network(net.network), OGPUWallet(private_key=net.key("client"))
                storage = OGPUStorage(write_url=f"file://{store.root.resolve()}", read_url=store.base_url)
                profile = {**net.profile, "payload_url": store.base_url}
                for n in sizes:
                    pg = postmaster_pid(tmp)
                    cpu0, block0 = cpu_seconds(pg), Chain(net.network).block_number()
                    floors[n] = run_floor(profile, str(store.root.resolve()), n)
                    blocks = Chain(net.network).block_number() - block0
                    print(f"{n:>6} tasks: chain floor {floors[n]:.1f}s, {blocks} blocks mined", flush=True)
                    show_cpu(n, "the floor", cpu_by_part(cpu0, cpu_seconds(pg)))

                    client = OGPUClient(chain, net.key("client"), store)  # the floor and run_batch moved the nonce
                    spec = SourceSpec(
                        name="scale",
                        cpu="http://127.0.0.1:9/c.yml",
                        min_payment=PAY,
                        min_available_lockup=10**18,
                        max_expiry_duration=3600,
                        delivery_method="FIRST_RESPONSE",
                    )
                    source = client.publish_source(spec)
                    for r in ROLES:
                        s = chain.sender(net.key(r))
                        s.transact(chain.nexus.register(source, s.address, 1))
                    stop = mp.Event()
                    proc = mp.get_context("fork").Process(
                        target=serve,
                        args=(profile, source, ROLES, chain.block_number(), str(store.root.resolve()), stop),
                    )
                    proc.start()
                    profs = []
                    if args.profile and n == max(sizes):
                        targets = {"client": os.getpid(), "providers": proc.pid, **server_pids()}
                        profs = start_profilers(targets, args.profile_dir, args.profile_rate)
                    before_rss, before_events = rss_mb(), sender_counts()
                    queue_full0 = queue_full_lines(tmp)
                    cpu0 = cpu_seconds(pg, {proc.pid: "providers"})
                    began, block0 = time.time(), chain.block_number()
                    t0 = time.perf_counter()
                    results = run_batch(
                        source,
                        [{"i": i} for i in range(n)],
                        PAY,
                        network,
                        wallet,
                        storage,
                        function_name="echo",
                        task_timeout=3600,
                        poll_interval=0.2,
                    )
                    times[n] = time.perf_counter() - t0
                    peaks[n] = rss_mb() - before_rss
                    blocks = chain.block_number() - block0
                    cpu = cpu_by_part(cpu0, cpu_seconds(pg, {proc.pid: "providers"}))
                    if profs:
                        stop_profilers(profs)
                    stop.set()
                    proc.join(timeout=60)
                    events.sender().flush(60.0)
                    after_events = sender_counts()
                    emitted = sum(after_events[k] - before_events[k] for k in ("sent", "dropped", "unsent"))
                    stored = sum(wait_stored(began, emitted).values())
                    queue_full = queue_full_lines(tmp) - queue_full0
                    dropped[n] = emitted - stored + queue_full
                    ok = sum(r.status == "finalized" for r in results)
                    print(
                        f"{n:>6} tasks: {ok} finalized in {times[n]:.1f}s ({n / times[n]:.0f} tasks/s), "
                        f"{times[n] / floors[n]:.2f}x the floor, {blocks} blocks mined; client RSS +{peaks[n]:.0f} MB "
                        f"(max RSS {rss_mb():.0f} MB); events emitted {emitted}, stored {stored}, "
                        f"'queue is full' lines {queue_full}",
                        flush=True,
                    )
                    show_cpu(n, "the batch", cpu)
        finally:
            net.stop()
    big = max(sizes)
    ref = 1000 if 1000 in sizes and big != 1000 else min(sizes)
    ratio = {n: times[n] / floors[n] for n in sizes}
    print(
        "ours/floor by size: "
        + ", ".join(f"{n}: {ratio[n]:.2f} ({times[n]:.1f}s / {floors[n]:.1f}s)" for n in sizes)
        + f"; time growth {big}/{ref}: ours {times[big] / times[ref]:.2f}x, floor {floors[big] / floors[ref]:.2f}x "
        f"(x{big // ref} tasks)"
    )
    if big != 10000:
        print(f"(the largest size here is {big}: the *_10k figures below are at {big} tasks)")
    print(f"peak_mb_10k={rss_mb():.0f} growth_vs_floor={ratio[big] / ratio[ref]:.2f} events_dropped_10k={dropped[big]}")


if __name__ == "__main__":
    main()
