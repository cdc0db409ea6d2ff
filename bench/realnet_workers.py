"""bench/realnet.py's chain with the real provider: `run_batch` of N FIRST_RESPONSE tasks (default
60) served by W `ogpu-provider` workers (real `prefect worker start` processes: watcher, policy,
the echo source run by the local process backend over HTTP, responder, the Prefect journal), on a
devnet mining a block every second under a 30M gas limit, every process behind the metered proxy
(tests/rpcproxy.py, 80 ms round trip, each call counted by method and role). Unlimited: it counts
the calls per task by role, which bench/realnet.py's stand-ins only approximate.

    .venv/bin/python bench/realnet_workers.py [--tasks 60] [--workers 2] [--poll 0.25] [--smoke]

Ends with `finalized=<n> tasks=N calls_per_task=X http_per_task=Y client=C worker1=W1 ...` (calls
per task by role). `--smoke`: 4 tasks.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _prefect_api import prefect_api  # noqa: E402
from _workdir import workdir  # noqa: E402
from realnet import PAY, Run, batch_gas, report  # noqa: E402

from ogpu_prefect.chain.connection import Chain  # noqa: E402
from tests.rpcproxy import ProxyProcess  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=60)
    ap.add_argument("--workers", type=int, default=2, choices=(1, 2, 3))
    ap.add_argument("--rtt", type=float, default=0.08)
    ap.add_argument("--poll", type=float, default=0.25, help="the workers' poll_interval_s")
    ap.add_argument("--smoke", action="store_true", help="4 tasks")
    args = ap.parse_args()
    if args.smoke:
        args.tasks = 4

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    from ogpu_prefect.backends import owner_tag
    from ogpu_prefect.blocks import OGPUNetwork
    from ogpu_prefect.chain import devnet as devnet_mod
    from ogpu_prefect.flows.run_batch import run_batch
    from ogpu_prefect.plugins.local_backend import LocalBackend
    from ogpu_prefect.prefect_api import api_url
    from ogpu_prefect.storage import LocalStore
    from ogpu_prefect.worker.configuration import with_defaults
    from ogpu_prefect.worker.worker import OGPUProviderWorker
    from tests.test_worker import Fleet

    with workdir("bench-realnet-workers-") as tmp:
        net = devnet_mod.start(block_time=1, gas_limit=30_000_000)
        fleets: list[Fleet] = []
        try:
            with (
                prefect_api(tmp, "sqlite"),
                LocalStore(tmp / "payloads") as store,
                ProxyProcess(net.rpc_url, delay_s=args.rtt) as proxy,
            ):
                direct = Chain(net.network)
                for i in range(args.workers):
                    fleet = Fleet(net, store, tmp, f"rnw{i + 1}")  # setup transactions go straight to anvil
                    fleet.network = OGPUNetwork.from_network(
                        dataclasses.replace(net.network, rpc_url=proxy.url_for(f"worker{i + 1}"))
                    )
                    fleet.network.save(f"{fleet.name}-net", overwrite=True)
                    fleets.append(fleet)
                source = fleets[0].publish_source()
                for i, fleet in enumerate(fleets):
                    role, pool = f"provider{i + 1}", f"rnw-pool{i + 1}"
                    template = with_defaults(
                        OGPUProviderWorker.get_default_base_job_template(),
                        network=fleet.network,
                        storage=fleet.storage,
                        wallet=fleet.wallet(role),
                        sources=[source],
                        poll_interval_s=args.poll,
                    )
                    with get_client(sync_client=True) as c:
                        c.create_work_pool(
                            WorkPoolCreate(name=pool, type="ogpu-provider", base_job_template=template), overwrite=True
                        )
                    fleet.start_worker(pool, role)
                for i, fleet in enumerate(fleets):
                    fleet.wait_registered(source, f"provider{i + 1}", timeout=180)
                time.sleep(2.0)  # the workers' first polls
                client_net = OGPUNetwork.from_network(dataclasses.replace(net.network, rpc_url=proxy.url_for("client")))
                block0 = direct.block_number()
                before = proxy.metering()
                t0 = time.perf_counter()
                results = run_batch(
                    source,
                    [{"text": f"t{i}"} for i in range(args.tasks)],
                    PAY,
                    client_net,
                    fleets[0].wallet("client"),
                    fleets[0].storage,
                    function_name="echo",
                    task_timeout=600,
                )
                wall = time.perf_counter() - t0
                metering = proxy.metering().minus(before)
                block1 = direct.block_number()
                run = Run(
                    "workers",
                    args.tasks,
                    sum(r.status == "finalized" for r in results),
                    wall,
                    batch_gas(direct, block0 + 1, block1),
                    block1 - block0,
                    metering,
                )
                report(run, None)
        finally:
            for i, fleet in enumerate(fleets):
                for role in list(fleet.procs):
                    fleet.stop(role, signal.SIGINT)
                LocalBackend(owner_tag(net.address(f"provider{i + 1}"), net.network.chain_id, api_url() or "")).reap()
            net.stop()
    roles = " ".join(f"{r}={sum(c.values()) / run.tasks:.1f}" for r, c in sorted(run.metering.calls.items()))
    print(
        f"finalized={run.finalized} tasks={run.tasks} calls_per_task={run.calls / run.tasks:.1f} "
        f"http_per_task={run.http / run.tasks:.1f} {roles}"
    )
    if run.finalized != args.tasks:
        sys.exit(1)


if __name__ == "__main__":
    main()
