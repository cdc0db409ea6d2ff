"""Publishing throughput: `publish_tasks` (ogpu_prefect.client) against two references measured in
the same run, on a fresh devnet.

- floor: the same publishTask transactions, signed and pipelined straight to the node with raw
  JSON-RPC batches, receipts collected in bulk: no validation, no payload writes, no decoding.
- sdk loop: the official `ogpu` SDK's pattern, one build + send + wait per task
  (`ogpu.client.publish_task`, its IPFS upload pointed at a loopback stub), on a subset
  (`--sdk-tasks`), as a rate.

    uv run python bench/publish.py [--tasks 1000] [--sdk-tasks 100] [--smoke]

Ends with `floor_ratio=<ours / floor> sdk_loop_ratio=<ours / sdk loop>` (throughput ratios).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _smoke import parse_args  # noqa: E402

from ogpu_prefect.chain import devnet  # noqa: E402
from ogpu_prefect.chain.connection import Chain  # noqa: E402
from ogpu_prefect.chain.structs import TaskParams  # noqa: E402
from ogpu_prefect.chain.types import DeliveryMethod  # noqa: E402
from ogpu_prefect.client import OGPUClient  # noqa: E402
from ogpu_prefect.models import SourceSpec, TaskInput  # noqa: E402
from ogpu_prefect.settings import get_settings  # noqa: E402
from ogpu_prefect.storage import LocalStore  # noqa: E402


def fresh(net_settings: devnet.DevnetSettings) -> devnet.Devnet:
    return devnet.start(settings=net_settings)


def setup(net: devnet.Devnet, store: LocalStore) -> tuple[OGPUClient, str]:
    client = OGPUClient(Chain(net.network), net.key("client"), store)
    source = client.publish_source(
        SourceSpec(
            name="bench",
            cpu="http://127.0.0.1:9/c.yml",
            min_payment=10**12,
            max_expiry_duration=86400,
            delivery_method=DeliveryMethod.FIRST_RESPONSE,
        )
    )
    return client, source


def run_ours(net: devnet.Devnet, store: LocalStore, n: int) -> float:
    client, source = setup(net, store)
    inputs = [TaskInput(function_name="echo", data={"i": i, "run": "ours"}) for i in range(n)]
    marks = [{"ogpu_prefect": {"batch": "bench", "index": i}} for i in range(n)]
    expiry = client.chain.now() + 3600
    t0 = time.perf_counter()
    published = client.publish_tasks(source, inputs, 10**12, expiry, marks=marks)
    wall = time.perf_counter() - t0
    assert len({p.address for p in published}) == n
    return wall


def run_floor(net: devnet.Devnet, store: LocalStore, n: int) -> float:
    client, source = setup(net, store)
    chain, sender = client.chain, client.sender
    urls = [store.put_json({"function_name": "echo", "data": {"i": i, "run": "floor"}}) for i in range(n)]
    expiry = chain.now() + 3600
    calls = [chain.controller.publish_task(TaskParams(source, u, expiry, 10**12)) for u in urls]
    gas = sender.estimate(calls[:1])[0]
    t0 = time.perf_counter()
    pending = sender.sign(calls, gas)
    rpc = chain.rpc
    rpc.batch([("eth_sendRawTransaction", ["0x" + p.raw.hex()]) for p in pending])
    missing = {p.tx_hash for p in pending}
    give_up = time.perf_counter() + 30
    while missing:
        if time.perf_counter() > give_up:
            h = next(iter(missing))
            raise RuntimeError(
                f"floor: {len(missing)} transactions not mined in 120 s; pool "
                f"{rpc.call('txpool_status')}; "
                f"latest {rpc.call('eth_getBlockByNumber', ['latest', False])['baseFeePerGas']}; "
                f"stuck {rpc.call('eth_getTransactionByHash', [h])}"
            )
        hashes = list(missing)
        for h, r in zip(hashes, rpc.batch([("eth_getTransactionReceipt", [h]) for h in hashes])):
            if isinstance(r, dict):
                assert r["status"] == "0x1"
                missing.discard(h)
        if missing:
            time.sleep(0.005)
            if time.perf_counter() - t0 > 1.0 + len(pending) / 500:  # see TxSender.wait: anvil mines on arrival
                rpc.call("evm_mine")
    return time.perf_counter() - t0


def run_sdk(net: devnet.Devnet, store: LocalStore, n: int) -> float:
    import ogpu
    from ogpu.chain.config import ChainConfig, ChainId
    from ogpu.client import TaskInfo, publish_task
    from ogpu.client import TaskInput as SdkInput

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from ipfs_stub import IpfsStub

    _, source = setup(net, store)
    with IpfsStub() as stub:
        import ogpu.ipfs.publish as sdk_ipfs

        sdk_ipfs._IPFS_PUBLISH_URL = f"{stub.url}/file/create"
        ChainConfig.CHAIN_CONTRACTS[ChainId.OGPU_MAINNET] = {
            "NEXUS": net.contracts["Nexus"],
            "CONTROLLER": net.contracts["Controller"],
            "TERMINAL": net.contracts["Terminal"],
            "VAULT": net.contracts["Vault"],
        }
        ChainConfig.set_chain(ChainId.OGPU_MAINNET)
        ChainConfig.set_rpc(net.rpc_url)
        ogpu.clear_all_nonce_caches()
        chain = Chain(net.network)
        expiry = chain.now() + 3600
        t0 = time.perf_counter()
        for i in range(n):
            publish_task(
                TaskInfo(
                    source=source,
                    config=SdkInput(function_name="echo", data={"i": i}),
                    expiryTime=expiry,
                    payment=10**12,
                ),
                private_key=net.key("client"),
            )
        return time.perf_counter() - t0


def measure(fn, n: int, settings: devnet.DevnetSettings, store_dir: Path) -> float:
    import contextlib
    import io

    net = fresh(settings)  # a fresh chain each time: anvil slows as blocks pile up
    try:
        store_dir.mkdir(parents=True, exist_ok=True)
        with (
            tempfile.TemporaryDirectory(dir=store_dir) as tmp,
            LocalStore(Path(tmp)) as store,
            contextlib.redirect_stdout(io.StringIO()),  # the SDK prints per call
        ):
            return fn(net, store, n)
    finally:
        net.stop()


def default_store_dir() -> Path:
    """tmpfs where there is one. On this machine's ext4, creating 1,000 small files took 15 ms at
    one moment and 300-540 ms (kernel time) minutes later, against a 0.5-1.4 s floor that writes
    its payloads before its clock starts: measuring the disk rather than publish_tasks. On tmpfs
    it is ~10 ms. `--store-dir .ogpu` measures the devnet's default location (BENCHMARKS.md
    reports both)."""
    shm = Path("/dev/shm")
    return shm / "ogpu-bench" if shm.is_dir() and os.access(shm, os.W_OK) else get_settings().home


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--sdk-tasks", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=5, help="floor/ours pairs, interleaved; medians are reported")
    ap.add_argument(
        "--store-dir",
        type=Path,
        default=default_store_dir(),
        help="where the payload store writes (default: tmpfs if the machine has one, see below)",
    )
    args = parse_args(ap, tasks=10, sdk_tasks=2, repeat=1)
    print(f"payload store under {args.store_dir}")
    settings = devnet.DevnetSettings(client_deposit=10**21)
    walls: dict[str, list[float]] = {"floor": [], "ours": []}
    for _ in range(args.repeat):  # interleaved, so a noisy moment hits both
        for name, fn in (("floor", run_floor), ("ours", run_ours)):
            wall = measure(fn, args.tasks, settings, args.store_dir)
            walls[name].append(wall)
            print(f"{name:<9} {args.tasks:>5} tasks in {wall:7.2f} s = {args.tasks / wall:8.1f} tasks/s", flush=True)
    sdk_wall = measure(run_sdk, args.sdk_tasks, settings, args.store_dir)
    print(f"sdk_loop  {args.sdk_tasks:>5} tasks in {sdk_wall:7.2f} s = {args.sdk_tasks / sdk_wall:8.1f} tasks/s")
    med = {k: sorted(v)[len(v) // 2] for k, v in walls.items()}
    ours_rate = args.tasks / med["ours"]
    print(f"medians: floor {args.tasks / med['floor']:.1f} tasks/s, ours {ours_rate:.1f} tasks/s")
    print(f"floor_ratio={med['floor'] / med['ours']:.2f} sdk_loop_ratio={ours_rate / (args.sdk_tasks / sdk_wall):.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
