"""Provider-worker throughput: tasks per second for one and two `ogpu-provider` workers (real
`prefect worker start` processes, local backend, the echo source) on the devnet, with a local
`prefect server start` (SQLite: ogpu_prefect/stack.py's `sqlite` stack). Time runs from publishing
the batch to the last task FINALIZED.

    .venv/bin/python bench/worker.py --tasks 60    (--smoke: 2 tasks)
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _prefect_api import prefect_api  # noqa: E402
from _smoke import parse_args  # noqa: E402
from _workdir import workdir  # noqa: E402


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `timeout` still stops what we started
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=60)
    args = parse_args(ap, tasks=2)
    from ogpu_prefect.chain import devnet as devnet_mod
    from ogpu_prefect.storage import LocalStore
    from tests.test_worker import Fleet

    with workdir("bench-worker-") as tmp:
        net = devnet_mod.start()
        rates, fleet = {}, None
        try:
            # This process (its blocks and pools) and the workers it starts talk to the stack.
            with prefect_api(tmp, "sqlite"), LocalStore(tmp / "payloads") as store:
                fleet = Fleet(net, store, tmp, "bench")
                for n, roles in ((1, ["provider1"]), (2, ["provider2", "provider3"])):
                    source = fleet.publish_source()
                    for r in roles:
                        fleet.create_pool(f"bench-{r}", [source], wallet_block=f"bench-{r}", max_concurrent_tasks=32)
                        fleet.start_worker(f"bench-{r}", r)
                    for r in roles:
                        fleet.wait_registered(source, r)
                    t0 = time.time()
                    tasks = [
                        p.address
                        for p in fleet.publish(source, [{"text": f"t{i}"} for i in range(args.tasks)], ttl=600)
                    ]
                    fleet.wait_final(tasks, timeout=600)
                    rates[n] = args.tasks / (time.time() - t0)
                    for r in roles:
                        fleet.stop(r)
                    print(
                        f"{n} worker(s): {args.tasks} tasks in {args.tasks / rates[n]:.1f}s = {rates[n]:.1f} tasks/s",
                        flush=True,
                    )
        finally:
            for role in list(fleet.procs) if fleet is not None else []:  # also on a failure or SIGTERM
                fleet.stop(role)
            net.stop()
        print(f"tasks_per_s_1={rates[1]:.2f} tasks_per_s_2={rates[2]:.2f} scaling={rates[2] / rates[1]:.2f}")


if __name__ == "__main__":
    main()
