"""Micro-benchmarks: the chain layer's hand-written pieces against the libraries they stand in for,
in one run, same inputs, each pair timed alternately round by round (a noisy moment hits both).

- sign: `Signer.sign` vs eth_account's `LocalAccount.sign_transaction` (type 2 and legacy EIP-155;
  the bytes are checked identical).
- encode: `Function.encode` vs `selector + eth_abi.encode(...)`, and vs web3's `Contract.encode_abi`.
- decode: `Function.decode` (eth_abi, then checksums, structs, enums) vs `eth_abi.decode` alone and
  vs web3's `call()` decode path; `decode_logs` of 1,000 lifecycle logs vs web3's `process_log`.
- checksum: `abi.checksum_address` (uncached and cached) vs `eth_utils.to_checksum_address`.
- batched reads, on a fresh devnet: `Chain.read_many` of 500 views vs web3 7's `batch_requests()`
  and vs web3 `ContractFunction.call()` one by one.

    uv run --frozen --no-sync python bench/micro.py [--rounds 7] [--reads 500] [--smoke]

Medians over rounds. Ends with `sign_ratio=... read_many_ratio=...`: library time / ours (above 1,
ours is faster). sign, encode and decode sum the per-op times of their eth_* rows; checksum is the
uncached row (the cache would work as well around eth_utils); read_many is against web3's batch.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import eth_abi  # noqa: E402
from _smoke import parse_args  # noqa: E402
from eth_account import Account  # noqa: E402
from eth_utils import to_checksum_address  # noqa: E402
from web3 import HTTPProvider, Web3  # noqa: E402
from web3._utils.abi import map_abi_data  # noqa: E402  (what web3's call() applies to a reply)
from web3._utils.method_formatters import log_entry_formatter  # noqa: E402  (what web3's get_logs applies)
from web3._utils.normalizers import addresses_checksummed  # noqa: E402

from ogpu_prefect.chain import devnet  # noqa: E402
from ogpu_prefect.chain.abi import checksum_address, spec  # noqa: E402
from ogpu_prefect.chain.connection import Chain  # noqa: E402
from ogpu_prefect.chain.logs import Log, created_address, decode_logs  # noqa: E402
from ogpu_prefect.chain.signing import Signer  # noqa: E402
from ogpu_prefect.chain.structs import SourceParams, TaskParams  # noqa: E402
from ogpu_prefect.chain.types import DeliveryMethod, TaskStatus  # noqa: E402

CONFIG_URL = "https://ipfs.example.org/ipfs/bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
rng = random.Random(55)  # fixed inputs: two runs measure the same work


def address() -> str:
    return to_checksum_address(rng.randbytes(20))


@dataclass
class Row:
    case: str
    unit: str
    ours: float
    library: float

    @property
    def ratio(self) -> float:
        return self.library / self.ours


def timed(fn: Callable[[], object], ops: int) -> float:
    """Per-op time of `fn` (which does `ops` operations), in µs. The garbage the other side left
    is collected first, untimed; what `fn` makes itself is collected on its clock."""
    gc.collect()
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) / ops * 1e6


def compare(
    ours: Callable[[], object],
    library: Callable[[], object],
    ops: int,
    rounds: int,
    before_ours: Callable[[], object] | None = None,
) -> tuple[float, float]:
    """Median per-op µs of each, over `rounds` rounds; the order alternates round by round.
    `before_ours` runs untimed before each of ours (to empty a cache)."""
    ours()  # warm-up: imports, caches of compiled ABIs on both sides
    library()
    times: dict[str, list[float]] = {"ours": [], "library": []}
    for i in range(rounds):
        for side in ("ours", "library") if i % 2 == 0 else ("library", "ours"):
            if side == "ours":
                if before_ours:
                    before_ours()
                times["ours"].append(timed(ours, ops))
            else:
                times["library"].append(timed(library, ops))
    return statistics.median(times["ours"]), statistics.median(times["library"])


def bench_sign(rounds: int) -> list[Row]:
    key = devnet.DEV_KEYS[1]
    signer, account = Signer(key), Account.from_key(key)
    data = spec("Controller").fn("publishTask").encode((TaskParams(address(), CONFIG_URL, 1_900_000_000, 10**15),))
    common = {"chainId": 31337, "nonce": 41, "gas": 450_000, "to": address(), "value": 0, "data": data}
    cases = {
        "type 2 publishTask": {**common, "maxPriorityFeePerGas": 10**9, "maxFeePerGas": 3 * 10**9},
        "legacy EIP-155": {**common, "gasPrice": 2 * 10**9},
    }
    rows, n = [], 300
    for name, tx in cases.items():
        signed = account.sign_transaction(tx)
        assert signer.sign(tx) == (bytes(signed.raw_transaction), bytes(signed.hash)), f"sign {name}: bytes differ"
        ours, lib = compare(
            lambda tx=tx: [signer.sign(tx) for _ in range(n)],
            lambda tx=tx: [account.sign_transaction(tx) for _ in range(n)],
            n,
            rounds,
        )
        rows.append(Row(f"sign {name} (vs eth_account)", "µs/op", ours, lib))
    return rows


def bench_encode(rounds: int) -> list[Row]:
    w3 = Web3()  # no provider: encode_abi is offline
    params = TaskParams(address(), CONFIG_URL, 1_900_000_000, 10**15)
    cases = {
        "Controller.publishTask": ("Controller", "publishTask", (params,), (params.as_tuple(),)),
        "Nexus.attempt": ("Nexus", "attempt", (address(), address(), 10**15), None),
    }
    rows, n, n_web3 = [], 3000, 300  # web3 is ~1 ms an op: fewer of them
    for name, (contract, fn_name, args, plain) in cases.items():
        fn = spec(contract).fn(fn_name)
        plain = plain or args  # eth_abi and web3 get plain tuples: their cheapest input
        web3_contract = w3.eth.contract(abi=list(spec(contract).abi))
        expected = fn.selector + eth_abi.encode(fn.input_types, plain)
        assert fn.encode(args) == expected == bytes.fromhex(web3_contract.encode_abi(fn_name, args=plain)[2:])
        for lib_name, k, lib_op in (
            ("eth_abi", n, lambda fn=fn, plain=plain: fn.selector + eth_abi.encode(fn.input_types, plain)),
            ("web3 encode_abi", n_web3, lambda c=web3_contract, f=fn_name, plain=plain: c.encode_abi(f, args=plain)),
        ):
            ours, lib = compare(
                lambda fn=fn, args=args, k=k: [fn.encode(args) for _ in range(k)],
                lambda lib_op=lib_op, k=k: [lib_op() for _ in range(k)],
                k,
                rounds,
            )
            rows.append(Row(f"encode {name} (vs {lib_name})", "µs/op", ours, lib))
    return rows


def bench_decode(rounds: int) -> list[Row]:
    source_params = SourceParams(address(), CONFIG_URL, 3, 10**16, 10**18, 3600, False, "", DeliveryMethod(1), 1_800)
    codec = Web3().codec
    cases = {
        "Source.getSourceParams": (spec("Source").fn("getSourceParams"), (source_params.as_tuple(),)),
        "Task.taskParams": (spec("Task").fn("taskParams"), (address(), CONFIG_URL, 1_900_000_000, 10**15)),
    }
    rows, n, n_web3 = [], 3000, 300
    for name, (fn, values) in cases.items():
        reply = eth_abi.encode(fn.output_types, values)
        decoded = fn.decode(reply)
        assert (decoded.as_tuple(),) == values if isinstance(decoded, SourceParams) else decoded == values
        # eth_abi answers lowercase addresses; ours checksums them (cached: the same reply each op,
        # as when a source is read again and again) and builds the struct and enums callers use.
        # web3's eth_call decode (its codec, then its return normalizers, which checksum
        # addresses) is the library doing that same job.
        web3_op = lambda fn=fn, reply=reply: map_abi_data(  # noqa: E731
            [addresses_checksummed], fn.output_types, codec.decode(fn.output_types, reply)
        )
        assert list(web3_op()) == list(values)
        eth_abi_op = lambda fn=fn, reply=reply: eth_abi.decode(fn.output_types, reply)  # noqa: E731
        for lib_name, k, lib_op in (("eth_abi", n, eth_abi_op), ("web3's call() decode", n_web3, web3_op)):
            ours, lib = compare(
                lambda fn=fn, reply=reply, k=k: [fn.decode(reply) for _ in range(k)],
                lambda lib_op=lib_op, k=k: [lib_op() for _ in range(k)],
                k,
                rounds,
            )
            rows.append(Row(f"decode {name} (vs {lib_name})", "µs/op", ours, lib))
    return rows


def lifecycle_logs(n: int) -> list[dict[str, Any]]:
    """`n` eth_getLogs entries as the node sends them: n/2 TaskPublished, then a TaskStatusChanged
    for each task (the stream a client's cursor reads)."""
    nexus = address().lower()
    events = spec("Nexus").events
    source = bytes.fromhex(address()[2:])
    tasks = [rng.randbytes(20) for _ in range(n // 2)]
    bodies = [(events["TaskPublished"], b"\0" * 12 + t + b"\0" * 12 + source) for t in tasks]
    bodies += [
        (events["TaskStatusChanged"], b"\0" * 12 + t + int(TaskStatus.ATTEMPTED).to_bytes(32, "big")) for t in tasks
    ]
    return [
        {
            "address": nexus,
            "topics": ["0x" + event.topic0.hex()],
            "data": "0x" + data.hex(),
            "blockNumber": hex(1000 + i // 50),
            "blockHash": "0x" + rng.randbytes(32).hex(),
            "transactionHash": "0x" + rng.randbytes(32).hex(),
            "transactionIndex": hex(i % 50),
            "logIndex": hex(i % 50),
            "removed": False,
        }
        for i, (event, data) in enumerate(bodies)
    ]


def bench_events(rounds: int) -> list[Row]:
    n = 1000
    raw = lifecycle_logs(n)
    ours_logs = [Log.from_rpc(lg) for lg in raw]
    web3_logs = [log_entry_formatter(lg) for lg in raw]
    nexus = Web3().eth.contract(abi=list(spec("Nexus").abi))
    by_topic = {bytes(e.topic0): getattr(nexus.events, e.name)() for e in spec("Nexus").events.values()}

    def web3_decode(logs: list[Any]) -> list[Any]:  # a web3 user dispatches on topic0 the same way
        return [by_topic[bytes(lg["topics"][0])].process_log(lg) for lg in logs]

    ours_out, web3_out = decode_logs(ours_logs), web3_decode(web3_logs)
    assert [(e.name, e.args) for e in ours_out] == [(e["event"], dict(e["args"])) for e in web3_out]
    # Empty our checksum cache before each round: otherwise every address is cached after the
    # first. Within a round each task address comes twice, as in a real stream.
    clear = checksum_address.cache_clear
    rounds = 2 * rounds + 1  # a round is only ~10 ms of ours
    ours, lib = compare(lambda: decode_logs(ours_logs), lambda: web3_decode(web3_logs), n, rounds, clear)
    rows = [Row(f"decode_logs, {n} logs (vs web3 process_log)", "µs/log", ours, lib)]
    ours, lib = compare(
        lambda: decode_logs([Log.from_rpc(lg) for lg in raw]),
        lambda: web3_decode([log_entry_formatter(lg) for lg in raw]),
        n,
        rounds,
        clear,
    )
    rows.append(Row(f"↳ from the RPC's JSON, {n} logs (+ web3's log formatter)", "µs/log", ours, lib))
    return rows


def bench_checksum(rounds: int) -> list[Row]:
    n = 3000
    addrs = [address().lower() for _ in range(n)]
    assert [checksum_address(a) for a in addrs] == [to_checksum_address(a) for a in addrs]
    clear = checksum_address.cache_clear

    def uncached() -> None:  # the clear is timed too: against us
        for a in addrs:
            clear()
            checksum_address(a)

    def library() -> None:
        for a in addrs:
            to_checksum_address(a)

    ours, lib = compare(uncached, library, n, rounds)
    rows = [Row("checksum_address, uncached (vs eth_utils)", "µs/op", ours, lib)]

    eip55 = checksum_address.__wrapped__  # the EIP-55 code alone, without the cache's clear and insert

    def bare() -> None:
        for a in addrs:
            eip55(a)

    ours, lib = compare(bare, library, n, rounds)
    rows.append(Row("↳ the function alone, no lru_cache (vs eth_utils)", "µs/op", ours, lib))

    def cached() -> None:
        for a in addrs:
            checksum_address(a)

    cached()
    ours, lib = compare(cached, library, n, rounds)
    rows.append(Row("checksum_address, cached (vs eth_utils)", "µs/op", ours, lib))
    return rows


def bench_reads(rounds: int, reads: int) -> list[Row]:
    t0 = time.perf_counter()
    net = devnet.start()
    try:
        chain = Chain(net.network)
        client = chain.sender(net.key("client"))
        now = chain.timestamp()
        params = SourceParams(client.address, CONFIG_URL, 3, 10**12, 10**18, 86400, False, "", DeliveryMethod(1), now)
        source = created_address(client.transact(chain.nexus.publish_source(params)), "SourcePublished", "source")
        publish = [chain.controller.publish_task(TaskParams(source, CONFIG_URL, now + 3600, 10**12))] * (reads // 2)
        receipts = client.wait(client.send(publish, client.estimate(publish[:1])[0]))
        tasks = [created_address(r, "TaskPublished", "task", net.network.nexus) for r in receipts]
        holders = [net.address(role) for role in devnet.ROLES] + [address() for _ in range(reads // 2)]
        print(f"devnet up, {len(tasks)} tasks published in {time.perf_counter() - t0:.1f} s", flush=True)

        # Half task statuses (an enum), half vault balances (a uint): what the waiting loop reads.
        our_tasks = [chain.task(t) for t in tasks]
        w3 = Web3(HTTPProvider(net.rpc_url, cache_allowed_requests=True))
        task_abi = list(spec("Task").abi)
        web3_tasks = [w3.eth.contract(address=t, abi=task_abi) for t in tasks]
        web3_vault = w3.eth.contract(address=net.network.vault, abi=list(spec("Vault").abi))
        count = len(tasks) * 2

        def ours() -> list[Any]:
            views = [
                r for t, h in zip(our_tasks, holders) for r in (t.read.get_status(), chain.vault.read.balance_of(h))
            ]
            return chain.read_many(views)

        def web3_views() -> list[Any]:
            return [
                f
                for t, h in zip(web3_tasks, holders)
                for f in (t.functions.getStatus(), web3_vault.functions.balanceOf(h))
            ]

        def web3_batch() -> list[Any]:
            with w3.batch_requests() as batch:
                for f in web3_views():
                    batch.add(f)
                return list(batch.execute())

        def web3_one_by_one() -> list[Any]:
            return [f.call() for f in web3_views()]

        expected = ours()
        assert expected == web3_batch() == web3_one_by_one(), "reads differ"
        assert expected[0] == TaskStatus.NEW and sum(expected[1::2]) > 0
        rows = []
        for name, lib_fn in (("web3 batch_requests", web3_batch), ("web3 call() one by one", web3_one_by_one)):
            o, lib = compare(ours, lib_fn, 1, rounds)
            rows.append(Row(f"read_many, {count} views (vs {name})", f"ms/{count}", o / 1e3, lib / 1e3))
        return rows
    finally:
        net.stop()


def versions() -> str:
    names = ("web3", "eth-account", "eth-abi", "eth-utils", "eth-keys", "coincurve", "rlp")
    return ", ".join(f"{n} {importlib.metadata.version(n)}" for n in names)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7, help="timed rounds per pair; medians are reported")
    ap.add_argument("--reads", type=int, default=500, help="views per read_many (half statuses, half balances)")
    args = parse_args(ap, rounds=1, reads=20)
    print(f"Python {platform.python_version()}, {os.cpu_count()} CPUs; {versions()}")
    load0, t0 = os.getloadavg()[0], time.perf_counter()
    rows: list[Row] = []
    for section in (bench_sign, bench_encode, bench_decode, bench_events, bench_checksum):
        t = time.perf_counter()
        rows += section(args.rounds)
        print(f"{section.__name__}: {time.perf_counter() - t:.1f} s", flush=True)
    rows += bench_reads(args.rounds, args.reads)

    width = max(len(r.case) for r in rows)
    print(f"\n| {'case':<{width}} | unit | ours | library | library/ours |")
    print(f"|{'-' * (width + 2)}|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r.case:<{width}} | {r.unit} | {r.ours:.2f} | {r.library:.2f} | {r.ratio:.2f} |")
    wall, load1 = time.perf_counter() - t0, os.getloadavg()[0]
    print(f"\n{wall:.0f} s; load average {load0:.2f} at the start, {load1:.2f} at the end")

    def ratio(prefix: str, vs: str = "") -> float:
        picked = [r for r in rows if r.case.startswith(prefix) and vs in r.case]
        return sum(r.library for r in picked) / sum(r.ours for r in picked)

    keys = {
        "sign_ratio": ratio("sign "),
        "encode_ratio": ratio("encode ", "(vs eth_abi)"),
        "decode_ratio": ratio("decode ", "(vs eth_abi)"),
        "event_decode_ratio": ratio("decode_logs"),
        "checksum_ratio": ratio("checksum_address, uncached"),
        "read_many_ratio": ratio("read_many", "batch_requests"),
    }
    print(" ".join(f"{k}={v:.2f}" for k, v in keys.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
