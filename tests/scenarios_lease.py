"""The lapsed-lease scenario of issue 20 (bench/reliability.py `lapsed_lease`; tests/test_lease_fence.py
runs it smaller), on a chain that mines a block every second, and the TCP proxy that cuts a
process's Prefect API.

What is real: two batch processes on one batch_key, a real Prefect server, the devnet mining every
second with a block gas limit that lets one publishTask transaction in a block (a congested chain:
transactions wait in the pool, as on a busy network), the outage of
one process's Prefect API (every connection through the proxy closed and refused), stand-in
providers (tests/provider_sim.py) answering once the congestion clears."""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any
from urllib.parse import urlsplit

from ogpu_prefect.batch import variable_name
from ogpu_prefect.chain.mining import set_block_time
from ogpu_prefect.chain.rpc import Rpc

from .scenarios import REPO, Ctx, Outcome, audit, save_blocks

PUBLISH_GAS = 310_000
"""A publishTask transaction's gas limit (its estimate with the sender's margin, ~306,000)."""
CUT_S = 80.0
"""How long run A's Prefect API is cut (longer than the lease, 60 s, as in the finding)."""
_REQUEST = re.compile(rb"^(?:GET|POST|PUT|PATCH|DELETE) (\S+) HTTP/1\.[01]\r$", re.M)


class CutProxy:
    """A loopback TCP proxy in front of an HTTP server (a Prefect API) that can cut every
    connection for a while and refuse new ones meanwhile; it records the paths of the requests it
    forwarded. `url` is the proxied API URL (the upstream URL with the proxy's port)."""

    def __init__(self, upstream_url: str) -> None:
        parts = urlsplit(upstream_url)
        assert parts.hostname == "127.0.0.1", "the cut proxy only fronts loopback servers"
        self.upstream = (parts.hostname, parts.port or 80)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = upstream_url.replace(f":{self.upstream[1]}", f":{self._listener.getsockname()[1]}", 1)
        self.down_until = 0.0
        self.paths: list[str] = []
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._closed = False
        threading.Thread(target=self._accept, name="cut-proxy", daemon=True).start()

    def __enter__(self) -> CutProxy:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._closed = True
        try:  # wakes the accept(): a close alone leaves it (and the port) listening on Linux
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        self._drop_all()

    def cut(self, seconds: float) -> None:
        """Every connection closed now, and every new one refused, for `seconds`."""
        self.down_until = time.monotonic() + seconds
        self._drop_all()

    def count(self, fragment: str) -> int:
        with self._lock:
            return sum(fragment in p for p in self.paths)

    def _drop_all(self) -> None:
        with self._lock:
            conns, self._open = list(self._open), set()
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if time.monotonic() < self.down_until:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open.update((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        try:
            while True:
                ready, _, _ = select.select([client, upstream], [], [], 1.0)
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    if s is client:
                        with self._lock:
                            self.paths += [m.decode(errors="replace") for m in _REQUEST.findall(data)]
                    (upstream if s is client else client).sendall(data)
        except (OSError, ValueError):
            return
        finally:
            with self._lock:
                self._open.difference_update((client, upstream))
            for s in (client, upstream):
                s.close()


def lapsed_lease(ctx: Ctx, n: int) -> Outcome:
    """Run A publishes n inputs into a congested chain (1 s blocks, room for one publishTask a
    block) and its Prefect API is cut for 80 s; run B, same batch_key, takes the lease once it
    lapses (~60 s) while A's transactions are still pending, then the congestion clears. The
    finding (issue 20): B reconciled at once and published again what A had pending (528 tasks for
    400 inputs). Every input must be on chain once, and no escrow stranded.

    It runs its own `prefect server start` (SQLite, with its services): the server's repossessor
    takes back a lapsed lease, and Prefect's test harness runs no services (its leases never lapse)."""

    from ogpu_prefect.stack import PrefectStack

    from .prefect_env import api_at

    stack = PrefectStack(ctx.workdir / "prefect", extra_env={"PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS": "5"})
    with stack as info, api_at(info.api_url):
        return _lapsed_lease(ctx, n, info.api_url)


def _lapsed_lease(ctx: Ctx, n: int, api_url: str) -> Outcome:
    outcome, source = Outcome("lapsed lease, a second run takes over", n), ctx.source()
    rpc = Rpc(ctx.devnet.rpc_url)
    client = ctx.devnet.address("client")
    start = ctx.chain.block_number() + 1
    key = f"lapsed-{start}"
    names = save_blocks(ctx, f"lapsed{start}")
    holder = variable_name(key).replace("ogpu-batch-", "ogpu-lease-", 1)
    procs: list[Any] = []
    with CutProxy(api_url) as proxy:
        try:
            set_block_time(rpc, 1)
            # One publishTask a block: A's transactions outlast its lease (cleared once B holds it). More
            # a block would fill blocks past the EIP-1559 target and price the backlog out of its fee cap.
            rpc.call("evm_setBlockGasLimit", [hex(PUBLISH_GAS + 150_000)])
            a = _run(ctx, "a", source, n, key, names, proxy.url)
            procs.append(a)
            _until(lambda: ctx.chain.source(source).get_task_count() > 0 or a.poll() is not None, 120)
            proxy.cut(CUT_S)
            b = _run(ctx, "b", source, n, key, names, api_url)
            procs.append(b)
            took_over = _until(lambda: _holder_pid(holder) == b.pid or b.poll() is not None, 150)
            pending = n - ctx.chain.source(source).get_task_count()
            a_signed = _nonce(rpc, client, "pending")
            # B (the old code) reconciles and publishes at once: give it the moment it needs
            _until(lambda: _nonce(rpc, client, "pending") > a_signed, 5)
            rpc.call("evm_setBlockGasLimit", [hex(30_000_000)])  # the congestion clears
            with ctx.providers(source, from_block=start):
                for p in (b, a):
                    p.wait(timeout=600)
            if b.returncode != 0:
                outcome.problems.append(f"run B failed: {(ctx.workdir / 'run-b.log').read_text()[-600:]}")
            outcome.detail = (
                f"{pending} of A's task(s) pending when B took over"
                f"{'' if took_over else ' (B never took over)'}; A exited {a.returncode}"
            )
            if not took_over or pending <= 0:
                outcome.problems.append(f"the scenario did not reproduce the finding: {outcome.detail}")
        finally:
            for p in procs:
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
            rpc.call("evm_setBlockGasLimit", [hex(300_000_000)])
            set_block_time(rpc, None)
    return audit(ctx, outcome, source, start)


def _run(ctx: Ctx, name: str, source: str, n: int, key: str, names: tuple[str, str, str], api_url: str) -> Any:
    """A batch process (tests/batch_proc.py) whose output goes to run-<name>.log (a pipe left
    unread through a long outage would fill and stall it)."""
    with open(ctx.workdir / f"run-{name}.log", "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.batch_proc", source, str(n), key, *names, "run"],
            cwd=REPO,
            env={**os.environ, "PREFECT_API_URL": api_url, "PREFECT_INTEGRATIONS_OGPU_BATCH_LEASE_WAIT_S": "300"},
            start_new_session=True,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _holder_pid(name: str) -> Any:
    from prefect.variables import Variable

    saved = Variable.get(name, default=None)
    return saved.get("pid") if isinstance(saved, dict) else None


def _nonce(rpc: Rpc, address: str, block: str) -> int:
    return int(rpc.call("eth_getTransactionCount", [address, block]), 16)


def _until(done: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.25)
    return True
