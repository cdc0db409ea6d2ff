"""Streaming batches at size: `stream_batch` over a JSON-lines file of 20,000 inputs with
`max_in_flight=500` on the devnet, under a Prefect server stack (ogpu_prefect/stack.py), served by
stand-in providers (tests/provider_sim.py: real attempt and submit transactions) in a process of
their own. The client runs in a spawned process of its own too, so its peak RSS is the flow's
(imports included). While it runs, this process samples the client's escrow on chain
(`Vault.frozenPayment`) every 0.25 s; at the end the results folder is read back.

Floor, measured in the same run: the chain floor (bench/_floors.py: the same publish, attempt and
submit transactions through the chain layer, all tasks at once, no Prefect) for `--floor-size`
tasks (default: as many as the batch; a smaller one is scaled linearly, which flatters the floor:
anvil slows as its state grows, 300 tasks run at ~500 tasks/s, 10,000 at ~29).

    .venv/bin/python bench/stream.py [--inputs 20000] [--max-in-flight 500] [--budget-tasks 450]
                                     [--floor-size 2000] [--stack sqlite|production] [--smoke]

On this 24 GB VM anvil itself runs out of memory at about 17,000 inputs (it grows ~1.7 GB a
minute under this load; BENCHMARKS.md): measure 20,000 on a larger machine, or `--inputs 10000`.

Ends with `stream_inputs=<n> peak_rss_mb=<client process max RSS> escrow_max_over_budget_wei=<max
sampled escrow - budget, <= 0 is within> exactly_once=<1 if every input has one result line>
time_vs_floor=<ours / floor scaled to n>`.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _prefect_api import prefect_api  # noqa: E402
from _smoke import parse_args  # noqa: E402
from _workdir import workdir  # noqa: E402
from scaling import ROLES, run_floor, serve  # noqa: E402

from ogpu_prefect.chain.connection import Chain  # noqa: E402

PAY = 10**15


def client_child(profile: dict, store_root: str, source: str, url: str, args: dict, out: Any) -> None:  # type: ignore[type-arg]
    """stream_batch in this (spawned) process; sends back its summary and this process' max RSS."""
    from ogpu_prefect.blocks import OGPUNetwork, OGPUStorage, OGPUWallet
    from ogpu_prefect.chain.devnet import DEV_KEYS
    from ogpu_prefect.chain.devnet import ROLES as DEV_ROLES
    from ogpu_prefect.chain.network import Network
    from ogpu_prefect.flows.stream_batch import stream_batch

    network = OGPUNetwork.from_network(Network.from_profile(profile))
    wallet = OGPUWallet(private_key=DEV_KEYS[DEV_ROLES.index("client")])
    storage = OGPUStorage(write_url=f"file://{store_root}", read_url=profile["payload_url"])
    # Run parameters read only under the input roots: this bench's own input folder.
    os.environ["PREFECT_INTEGRATIONS_OGPU_INPUT_ROOTS"] = json.dumps([url.removeprefix("file://").rsplit("/", 1)[0]])
    t0 = time.perf_counter()
    summary = stream_batch(
        source,
        url,
        PAY,
        network,
        wallet,
        storage,
        function_name="echo",
        task_timeout=3600,
        max_in_flight=args["max_in_flight"],
        budget=args["budget_tasks"] * PAY,
        poll_interval=0.2,
    )
    wall = time.perf_counter() - t0
    out.send((summary.model_dump(), wall, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
    out.close()


class EscrowSampler(threading.Thread):
    def __init__(self, chain: Chain, client: str) -> None:
        super().__init__(daemon=True)
        self.chain, self.client, self.stop = chain, client, threading.Event()
        self.max, self.samples = 0, 0

    def run(self) -> None:
        while not self.stop.wait(0.25):
            try:
                self.max = max(self.max, self.chain.vault.frozen_payment(self.client))
                self.samples += 1
            except Exception:  # a busy node: the next sample
                pass


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--inputs", type=int, default=20000)
    ap.add_argument("--max-in-flight", type=int, default=500)
    ap.add_argument("--budget-tasks", type=int, default=450, help="the budget, in tasks' payments")
    ap.add_argument("--floor-size", type=int, default=0, help="tasks in the chain floor (default: --inputs)")
    ap.add_argument("--stack", choices=("sqlite", "production"), default="sqlite")
    args = parse_args(ap, inputs=12, max_in_flight=8, budget_tasks=8)

    from ogpu_prefect.chain import devnet as devnet_mod
    from ogpu_prefect.client import OGPUClient
    from ogpu_prefect.models import SourceSpec
    from ogpu_prefect.storage import LocalStore
    from ogpu_prefect.stream_io import read_results

    n, budget = args.inputs, args.budget_tasks * PAY
    args.floor_size = args.floor_size or n
    with workdir("bench-stream-") as tmp:
        net = devnet_mod.start()
        try:
            with prefect_api(tmp, args.stack), LocalStore(tmp / "payloads") as store:
                chain = Chain(net.network)
                root = str(store.root.resolve())
                profile = {**net.profile, "payload_url": store.base_url}
                floor = run_floor(profile, root, args.floor_size)
                floor_n = floor * n / args.floor_size
                print(f"chain floor: {args.floor_size} tasks in {floor:.1f}s, {floor_n:.0f}s scaled to {n}", flush=True)

                inputs = tmp / "inputs.jsonl"
                inputs.write_text("".join(json.dumps({"i": i}) + "\n" for i in range(n)))
                client = OGPUClient(chain, net.key("client"), store)
                source = client.publish_source(
                    SourceSpec(
                        name="stream",
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
                sampler = EscrowSampler(chain, net.address("client"))
                sampler.start()
                ctx = mp.get_context("spawn")
                mine, theirs = ctx.Pipe(duplex=False)
                options = {"max_in_flight": args.max_in_flight, "budget_tasks": args.budget_tasks}
                child = ctx.Process(
                    target=client_child, args=(profile, root, source, f"file://{inputs}", options, theirs)
                )
                child.start()
                theirs.close()
                summary, wall, peak = mine.recv()
                child.join(timeout=60)
                sampler.stop.set()
                sampler.join()
                stop.set()
                providers.join(timeout=60)
                lines = [r["index"] for r in read_results(summary["results_url"])]
        finally:
            net.stop()
    once = int(sorted(lines) == list(range(n)))
    print(
        f"{n} inputs, max_in_flight {args.max_in_flight}, budget {args.budget_tasks} tasks: {summary['counts']} "
        f"in {wall:.1f}s ({n / wall:.0f} inputs/s), {wall / floor_n:.2f}x the floor; client max RSS {peak:.0f} MB; "
        f"escrow max {sampler.max / PAY:.0f} tasks' worth over {sampler.samples} samples "
        f"(the flow's own count: {summary['held_peak_wei'] / PAY:.0f}); {len(lines)} result lines, "
        f"{len(set(lines))} inputs, {len(summary['parts'])} parts",
        flush=True,
    )
    print(
        f"stream_inputs={n} peak_rss_mb={peak:.0f} escrow_max_over_budget_wei={sampler.max - budget} "
        f"exactly_once={once} time_vs_floor={wall / floor_n:.2f}"
    )


if __name__ == "__main__":
    main()
