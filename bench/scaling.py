"""Client-side scaling: `run_batch` publishing and awaiting 100, 1,000 and 10,000 FIRST_RESPONSE tasks
on the devnet, under Prefect's test-harness server. The tasks are served by stand-in providers
(tests/provider_sim.py: real attempt and submit transactions) running in a separate process, so the
client process' peak memory is the flow's own.

    .venv/bin/python bench/scaling.py [--sizes 100,1000,10000]

Ends with `peak_mb_10k=<the client process' maximum RSS, MB, by the end of the 10,000 batch (imports
included)> growth=<time at 10,000 / (100 x time at 100)>`.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path

from ogpu_prefect.chain.connection import Chain

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _workdir import workdir  # noqa: E402

PAY = 10**15


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


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100,1000,10000")
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    from prefect.testing.utilities import prefect_test_harness

    from ogpu_prefect.blocks import OGPUNetwork, OGPUStorage, OGPUWallet
    from ogpu_prefect.chain import devnet as devnet_mod
    from ogpu_prefect.client import OGPUClient
    from ogpu_prefect.flows.run_batch import run_batch
    from ogpu_prefect.models import SourceSpec
    from ogpu_prefect.storage import LocalStore

    with workdir("bench-scaling-") as tmp:
        net = devnet_mod.start()
        times: dict[int, float] = {}
        peaks: dict[int, float] = {}
        try:
            with prefect_test_harness(server_startup_timeout=90), LocalStore(tmp / "payloads") as store:
                chain = Chain(net.network)
                network, wallet = OGPUNetwork.from_network(net.network), OGPUWallet(private_key=net.key("client"))
                storage = OGPUStorage(write_url=f"file://{store.root.resolve()}", read_url=store.base_url)
                for n in sizes:
                    client = OGPUClient(chain, net.key("client"), store)  # run_batch's own sender moved the nonce
                    spec = SourceSpec(
                        name="scale",
                        cpu="http://127.0.0.1:9/c.yml",
                        min_payment=PAY,
                        min_available_lockup=10**18,
                        max_expiry_duration=3600,
                        delivery_method="FIRST_RESPONSE",
                    )
                    source = client.publish_source(spec)
                    roles = ["provider1", "provider2"]
                    for r in roles:
                        s = chain.sender(net.key(r))
                        s.transact(chain.nexus.register(source, s.address, 1))
                    profile = {**net.profile, "payload_url": store.base_url}
                    stop = mp.Event()
                    proc = mp.get_context("fork").Process(
                        target=serve,
                        args=(profile, source, roles, chain.block_number(), str(store.root.resolve()), stop),
                    )
                    proc.start()
                    before = rss_mb()
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
                    peaks[n] = rss_mb() - before
                    stop.set()
                    proc.join(timeout=60)
                    ok = sum(r.status == "finalized" for r in results)
                    print(
                        f"{n:>6} tasks: {ok} finalized in {times[n]:.1f}s ({n / times[n]:.0f} tasks/s), "
                        f"client peak RSS +{peaks[n]:.0f} MB (max RSS {rss_mb():.0f} MB)",
                        flush=True,
                    )
        finally:
            net.stop()
        big, small = max(sizes), min(sizes)
        print(f"peak_mb_10k={rss_mb():.0f} growth={times[big] / ((big / small) * times[small]):.2f}")


if __name__ == "__main__":
    main()
