"""Floors for the end-to-end benches, measured in the same run as what they are compared with: the
job's cost with no Prefect at all.

- chain floor: the transactions alone, through the chain layer. The client publishes the batch
  (configs written, pipelined); each provider attempts its share (pipelined), stores a result per
  task and submits the responses (pipelined); providers run in threads.
- service floor: the same transactions plus, per task, what a provider cannot skip: the task's
  config read over HTTP (the same `fetch_json` the worker uses), the input sent to a warm instance
  of the official `ogpu.service` echo source (started by the same local backend from the same
  compose file, one instance and one callback receiver per provider, as each worker has), the
  callback awaited, the result stored, the response submitted. A minimal loop: a thread pool per
  provider and one submitter that sends whatever is ready as one pipelined batch. No Prefect, no
  journal, no events.

Both split the tasks round-robin between the providers (a worker takes what it sees first; here
each provider is given its share, so no attempt is wasted on a race).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ogpu_prefect.chain.connection import Chain
from ogpu_prefect.chain.network import Network
from ogpu_prefect.chain.structs import ResponseParams

ECHO = Path(__file__).resolve().parents[1] / "flows" / "sources" / "echo" / "docker-compose.cpu.yml"
PAY = 10**16
FLOOR_THREADS = 32
"""Tasks in flight per provider in the service floor (a worker runs up to its max_concurrent_tasks
in anyio's thread pool, 40 threads)."""


def stand_providers(network: Network, keys: dict[str, str], source: str) -> None:
    """Each provider (role -> key) deposits and locks 5 OGPU and registers to `source` (CPU).
    (More than this source needs: a worker of the same key registering to another source later
    needs the lockup for both, and `Provider.ensure_standing` counts only the worker's own.)"""
    chain = Chain(network)
    for key in keys.values():
        s = chain.sender(key)
        s.transact(chain.vault.deposit(s.address, value=5 * 10**18))
        s.transact(chain.vault.lock(5 * 10**18))
        s.transact(chain.nexus.register(source, s.address, 1))


def _publish(network: Network, client_key: str, store: Any, source: str, n: int, tag: str) -> list[str]:
    from ogpu_prefect.client import OGPUClient
    from ogpu_prefect.models import TaskInput

    client = OGPUClient(Chain(network), client_key, store)
    published = client.publish_tasks(
        source,
        [TaskInput(function_name="echo", data={"text": f"{tag}{i}"}) for i in range(n)],
        PAY,
        client.chain.now() + 900,
    )
    return [p.address for p in published]


def _run_split(target: Any, keys: Sequence[str], tasks: list[str]) -> None:
    errors: list[BaseException] = []

    def guarded(key: str, mine: list[str]) -> None:
        try:
            target(key, mine)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(e)

    threads = [
        threading.Thread(target=guarded, args=(key, tasks[i :: len(keys)])) for i, key in enumerate(keys) if tasks[i:]
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def chain_floor(
    network: Network, client_key: str, provider_keys: Sequence[str], store: Any, source: str, n: int
) -> float:
    """Seconds for `n` tasks, publish to the last response mined, through the chain layer alone."""

    def serve(key: str, mine: list[str]) -> None:
        c = Chain(network)
        sender = c.sender(key)
        sender.wait(sender.send([c.nexus.attempt(t, sender.address, PAY) for t in mine], 300_000))
        urls = [
            store.put_json({"task": t, "provider": sender.address, "result": {"echo": {}}}, field="result")
            for t in mine
        ]
        calls = [c.nexus.submit_response(ResponseParams(t, sender.address, u, PAY)) for t, u in zip(mine, urls)]
        sender.wait(sender.send(calls, 600_000))

    t0 = time.perf_counter()
    tasks = _publish(network, client_key, store, source, n, "c")
    _run_split(serve, list(provider_keys), tasks)
    return time.perf_counter() - t0


class ServiceRig:
    """One warm echo service per provider, started by the local backend (as a worker's are), each
    with the callback receiver it calls back."""

    def __init__(self, provider_keys: Sequence[str]) -> None:
        from ogpu_prefect.chain.types import Environment
        from ogpu_prefect.compose import ComposeSpec
        from ogpu_prefect.plugin_manager import PluginKind, create
        from ogpu_prefect.worker.service import CallbackReceiver

        self.rigs: dict[str, tuple[Any, Any]] = {}
        try:
            for i, key in enumerate(provider_keys):
                receiver = CallbackReceiver().start()
                # Our own owner tag: a worker reaps its address's services when it starts.
                backend = create(PluginKind.HARDWARE_BACKEND, "local", owner=f"bench-floor-{i}")
                self.rigs[key] = (receiver, None)
                service = backend.start(
                    ComposeSpec.load(ECHO), Environment.CPU, callback_url=receiver.url, log=lambda line: None
                )
                self.rigs[key] = (receiver, service)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for receiver, service in self.rigs.values():
            if service is not None:
                service.stop()
            receiver.stop()
        self.rigs.clear()

    def pids(self) -> list[int]:
        return [service.pid for _, service in self.rigs.values() if service is not None]


def service_floor(
    network: Network,
    client_key: str,
    provider_keys: Sequence[str],
    store: Any,
    source: str,
    n: int,
    rig: ServiceRig,
    threads: int = FLOOR_THREADS,
) -> float:
    """Seconds for `n` tasks, publish to the last response mined, with each task's config fetched,
    run by the provider's warm echo service and its callback awaited (see module doc)."""
    from ogpu_prefect.chain.rpc import http_session
    from ogpu_prefect.storage import fetch_json
    from ogpu_prefect.worker.service import ServiceClient

    def serve(key: str, mine: list[str]) -> None:
        receiver, service = rig.rigs[key]
        c = Chain(network)
        sender = c.sender(key)
        sender.wait(sender.send([c.nexus.attempt(t, sender.address, PAY) for t in mine], 300_000))
        params = c.read_many([c.task(t).read.task_params() for t in mine])  # a provider reads each config URL
        local = threading.local()
        ready: queue.Queue[tuple[str, str]] = queue.Queue()

        def one(task: str, config_url: str) -> None:
            session = getattr(local, "session", None)
            if session is None:
                session = local.session = http_session()
            config = fetch_json(config_url, allowed_origins=store.trusted_origins)
            receiver.expect(task)
            ServiceClient(service.base_url, session=session).submit(
                config["function_name"], task, config.get("data", {})
            )
            result = receiver.wait(task, time.time() + 120)
            url = store.put_json({"task": task, "provider": sender.address, "result": result}, field="result")
            ready.put((task, url))

        with ThreadPoolExecutor(threads) as pool:
            futures = [pool.submit(one, t, p[1]) for t, p in zip(mine, params)]
            done = 0
            while done < len(mine):
                try:
                    batch = [ready.get(timeout=1.0)]
                except queue.Empty:
                    failed = [f for f in futures if f.done() and f.exception() is not None]
                    if failed:
                        raise failed[0].exception() from None  # type: ignore[misc]
                    continue
                while True:
                    try:
                        batch.append(ready.get_nowait())
                    except queue.Empty:
                        break
                calls = [c.nexus.submit_response(ResponseParams(t, sender.address, u, PAY)) for t, u in batch]
                sender.wait(sender.send(calls, 600_000))
                done += len(batch)

    t0 = time.perf_counter()
    tasks = _publish(network, client_key, store, source, n, "s")
    _run_split(serve, list(provider_keys), tasks)
    return time.perf_counter() - t0
