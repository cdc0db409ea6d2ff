"""A source's function as a Prefect task at size: a flow that `.map`s 1,000 inputs over an
`OGPUFunction` against `run_batch` of the same 1,000 inputs, each on a fresh devnet (anvil slows as
its state grows: the second on a used chain would be flattered or penalised), both in this process
under a Prefect server stack (ogpu_prefect/stack.py), served by stand-in providers
(tests/provider_sim.py: real attempt and submit transactions) in a process of their own. Then the
same flow again over the same inputs on the second chain: every call should be a cache hit
(result_cache.py), publishing and paying nothing. Between the two, Prefect's floor: the same flow
over a plain task with the same options, no chain (what 1,000 task runs cost Prefect itself). Each
run prints the CPU seconds of every process by part (the client, its calls' loop, the Prefect
server, anvil, the stand-in providers): on a machine of few cores they share, that is the wall.

    .venv/bin/python bench/fanout.py [--inputs 1000] [--stack sqlite|production] [--smoke]

Ends with `map_vs_run_batch=<flow .map wall / run_batch wall> cache_hit_tasks=<tasks the cached
flow published> cache_hit_wei=<what it paid>`.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _prefect_api import cpu_by_part, cpu_seconds, parts_text, prefect_api, wait_api_idle  # noqa: E402
from _smoke import parse_args  # noqa: E402
from _workdir import workdir  # noqa: E402
from scaling import ROLES, serve  # noqa: E402

from ogpu_prefect.chain.connection import Chain  # noqa: E402

PAY = 10**15


def published(chain: Chain, since: int, source: str) -> int:
    return sum(1 for e in chain.cursor(["TaskPublished"], since).poll() if e["source"].lower() == source.lower())


def on_fresh_chain(tmp: Path, name: str, work: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    """`work(chain, blocks, source, net, cpu)` on a fresh devnet with a served source; `cpu()` is
    the CPU seconds of this run's processes so far (the stand-in providers' named)."""
    from ogpu_prefect.blocks import OGPUNetwork, OGPUStorage, OGPUWallet
    from ogpu_prefect.chain import devnet as devnet_mod
    from ogpu_prefect.client import OGPUClient
    from ogpu_prefect.models import SourceSpec
    from ogpu_prefect.storage import LocalStore

    net = devnet_mod.start()
    try:
        with LocalStore(tmp / f"payloads-{name}") as store:
            chain = Chain(net.network)
            root = str(store.root.resolve())
            profile = {**net.profile, "payload_url": store.base_url}
            source = OGPUClient(chain, net.key("client"), store).publish_source(
                SourceSpec(
                    name="fanout",
                    cpu="http://127.0.0.1:9/c.yml",
                    min_payment=PAY,
                    min_available_lockup=10**18,
                    max_expiry_duration=3600,
                    delivery_method="FIRST_RESPONSE",
                )
            )
            for r in ROLES:
                s = chain.sender(net.key(r))
                s.transact(chain.nexus.register(source, s.address, 1))
            stop = mp.Event()
            providers = mp.get_context("fork").Process(
                target=serve, args=(profile, source, ROLES, chain.block_number(), root, stop)
            )
            providers.start()
            blocks = (
                OGPUNetwork.from_network(net.network),
                OGPUWallet(private_key=net.key("client")),
                OGPUStorage(write_url=f"file://{root}", read_url=store.base_url),
            )
            named = {providers.pid: "stand-in providers"}
            try:
                return work(chain, blocks, source, net, lambda: cpu_seconds(named=named))
            finally:
                stop.set()
                providers.join(timeout=60)
    finally:
        net.stop()


def batch_work(inputs: list[Any]) -> Callable[..., dict[str, Any]]:
    def work(chain: Chain, blocks: Any, source: str, net: Any, cpu: Callable[[], Any]) -> dict[str, Any]:
        from ogpu_prefect.flows.run_batch import run_batch

        before, t0 = cpu(), time.perf_counter()
        results = run_batch(source, inputs, PAY, *blocks, function_name="echo", task_timeout=600, max_republish=1)
        wall = time.perf_counter() - t0
        return {"wall": wall, "ok": sum(r.ok for r in results), "cpu": parts_text(cpu_by_part(before, cpu()))}

    return work


def map_work(inputs: list[Any]) -> Callable[..., dict[str, Any]]:
    def work(chain: Chain, blocks: Any, source: str, net: Any, cpu: Callable[[], Any]) -> dict[str, Any]:
        from prefect import flow

        from ogpu_prefect import OGPUFunction

        network, wallet, storage = blocks
        echo = OGPUFunction(
            source, "echo", payment=PAY, network=network, wallet=wallet, storage=storage, task_timeout=600, retries=1
        )

        @flow(name="fanout")
        def fanout(items: list[Any]) -> int:
            return sum(1 for f in echo.map(items) if f.result() is not None)

        before, t0 = cpu(), time.perf_counter()
        ok = fanout(inputs)
        wall = time.perf_counter() - t0
        print(
            f"flow .map: {ok}/{len(inputs)} in {wall:.1f}s (CPU s: {parts_text(cpu_by_part(before, cpu()))})",
            flush=True,
        )
        client = net.address("client")
        block, balance = chain.block_number(), chain.vault.balance_of(client)
        t1 = time.perf_counter()
        again = with_retries(lambda: fanout(inputs))
        cached_wall = time.perf_counter() - t1
        return {
            "wall": wall,
            "ok": ok,
            "cached_ok": again,
            "cached_wall": cached_wall,
            "cache_tasks": published(chain, block + 1, source),
            "cache_wei": balance - chain.vault.balance_of(client),
        }

    return work


def prefect_floor(inputs: list[Any]) -> dict[str, Any]:
    """Prefect's own cost of the `.map` flow, on the same server: the same flow over a plain task
    with the same options (a cache key per input, persisted results, one retry, a run name from
    the input) that returns its input. No chain, no loop: what no OpenGPU code can save."""
    import hashlib
    import json

    from prefect import flow, task

    def key(context: Any, parameters: dict[str, Any]) -> str:
        return hashlib.sha256(json.dumps(parameters["data"], sort_keys=True).encode()).hexdigest()

    @task(task_run_name="plain-echo-{data!s:.40}", retries=1, cache_key_fn=key, persist_result=True)
    def echo(data: Any) -> Any:
        return data

    @flow(name="fanout-floor")
    def fanout_floor(items: list[Any]) -> int:
        return sum(1 for f in echo.map(items) if f.result() is not None)

    before, t0 = cpu_seconds(), time.perf_counter()
    ok = fanout_floor(inputs)
    wall = time.perf_counter() - t0
    return {"wall": wall, "ok": ok, "cpu": parts_text(cpu_by_part(before, cpu_seconds()))}


def with_retries(run: Callable[[], Any], tries: int = 4) -> Any:
    """A flow call that a busy SQLite server refused to create (503): once it has caught up."""
    from prefect.exceptions import PrefectHTTPStatusError

    for i in range(tries):
        try:
            return run()
        except PrefectHTTPStatusError as e:
            if i == tries - 1 or e.response.status_code != 503:
                raise
            print(f"the server is busy ({e.response.status_code}); again in 15 s", flush=True)
            time.sleep(15)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--inputs", type=int, default=1000)
    ap.add_argument("--stack", choices=("sqlite", "production"), default="sqlite")
    args = parse_args(ap, inputs=20)

    from prefect.settings import PREFECT_RESULTS_LOCAL_STORAGE_PATH, temporary_settings

    n = args.inputs
    inputs = [{"i": i, "text": f"input {i}"} for i in range(n)]
    with workdir("bench-fanout-") as tmp:
        os.environ["PREFECT_RESULTS_LOCAL_STORAGE_PATH"] = str(tmp / "results")  # the cache: this run's own
        with (
            prefect_api(tmp, args.stack),
            temporary_settings({PREFECT_RESULTS_LOCAL_STORAGE_PATH: tmp / "results"}),
        ):
            wait_api_idle()  # the stack's start-up, as the floor's recording below: not a measured run's
            batch = on_fresh_chain(tmp, "batch", batch_work(inputs))
            print(f"run_batch: {batch['ok']}/{n} in {batch['wall']:.1f}s (CPU s: {batch['cpu']})", flush=True)
            floor = prefect_floor(inputs)
            print(
                f"Prefect's floor (a plain task .mapped): {floor['ok']}/{n} in {floor['wall']:.1f}s "
                f"(CPU s: {floor['cpu']}); the server settled {wait_api_idle():.0f}s after it",
                flush=True,
            )
            mapped = on_fresh_chain(tmp, "map", map_work(inputs))
            print(
                f"again (cached): {mapped['cached_ok']}/{n} in {mapped['cached_wall']:.1f}s, "
                f"{mapped['cache_tasks']} published, {mapped['cache_wei']} wei paid",
                flush=True,
            )
    if batch["ok"] != n or mapped["ok"] != n or mapped["cached_ok"] != n:
        raise SystemExit(f"not every input finalized: {batch['ok']}, {mapped['ok']}, {mapped['cached_ok']} of {n}")
    print(f"prefect_floor_vs_run_batch={floor['wall'] / batch['wall']:.2f} (Prefect's own {n} task runs, no chain)")
    print(
        f"map_vs_run_batch={mapped['wall'] / batch['wall']:.2f} cache_hit_tasks={mapped['cache_tasks']} "
        f"cache_hit_wei={mapped['cache_wei']}"
    )


if __name__ == "__main__":
    main()
