"""One provider account at work, without Prefect: its on-chain standing (stake, registrations),
warm services per source (through a hardware backend), and the execution of one task from
attempt to on-chain response. The `ogpu-provider` worker drives this.

Executing a task: read its config (PROTOCOL.md 6), send `data` to the source's service
(`POST /run/{function_name}/{task}`), wait for the callback no later than the task's expiry,
store the envelope `{"task", "provider", "result"}`, and submit its URL with `Nexus.submitResponse`.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..backends import HardwareBackend, RunningService
from ..chain.connection import Chain
from ..chain.events import created_address
from ..chain.tx import Signer
from ..chain.types import Environment, ResponseParams, TaskStatus
from ..storage import PayloadStore, fetch_json
from .compose import ComposeSpec
from .service import CallbackReceiver, ServiceClient, ServiceError

log = logging.getLogger(__name__)

DEADLINE_MARGIN_S = 5
"""Seconds before a task's expiry by which its response must be on its way to the chain."""


class ProviderError(Exception):
    """A task could not be executed (no compose for our environment, service failure, deadline)."""


class TaskTakenError(ProviderError):
    """The task was finalized (another provider answered first) or expired before our response."""


@dataclass(frozen=True)
class Executed:
    """A task we answered: our Response, the URL of the stored result, the payment asked."""

    response: str
    data_url: str
    payment: int
    resumed: bool = False
    """True when the response was already on chain (a restart after a crash)."""


@dataclass
class _Warm:
    service: RunningService
    last_used: float = field(default_factory=time.time)


class Provider:
    def __init__(self, chain: Chain, signer: Signer | Any, store: PayloadStore, backend: HardwareBackend,
                 environment: Environment = Environment.CPU, *, fetch: Callable[[str], Any] = fetch_json,
                 service_log: Callable[[str, str], None] | None = None) -> None:
        self.chain = chain
        self.sender = chain.sender(signer)
        self.store = store
        self.backend = backend
        self.environment = environment
        self.fetch = fetch
        self.service_log = service_log or (lambda source, line: log.info("[%s] %s", source[:10], line))
        self.receiver = CallbackReceiver().start()
        self._services: dict[str, _Warm] = {}
        self._lock = threading.Lock()
        self._workdir = Path(tempfile.mkdtemp(prefix="ogpu-provider-"))

    @property
    def address(self) -> str:
        return self.sender.address

    # ---- standing ----

    def ensure_standing(self, sources: Sequence[str], *, stake: int | None = None) -> None:
        """Locks enough stake (from the Vault balance, topped up from the wallet) and registers to
        each source with our environment. Idempotent."""
        vault = self.chain.vault
        per_source = vault.MIN_LOCKUP_PER_SOURCE()
        terms = self.chain.read_many([(self.chain.source(s), "getSourceParams", ()) for s in sources])
        need = max([per_source * len(sources), *(t.minAvailableLockup for t in terms)], default=0)
        need = max(need, stake or 0)
        locked = vault.lockup_of(self.address)
        if locked < need:
            short = need - locked
            free = vault.balance_of(self.address)
            if free < short:
                self.sender.transact(vault.deposit(self.address, value=short - free))
            self.sender.transact(vault.lock(short))
        ids = self.chain.read_many([(self.chain.source(s), "registrantId", (self.address,)) for s in sources])
        envs = self.chain.read_many([(self.chain.source(s), "preferredEnvironmentOf", (self.address,)) for s in sources])
        todo = [s for s, i, e in zip(sources, ids, envs) if i == 0 or e != int(self.environment)]
        for s in todo:
            self.sender.transact(self.chain.nexus.register(s, self.address, int(self.environment)))

    # ---- services ----

    def compose_for(self, source: str) -> ComposeSpec:
        params = self.chain.source(source).get_source_params()
        metadata = self.fetch(params.imageMetadataUrl)
        url = (metadata or {}).get(self.environment.name.lower(), "")
        if not url:
            raise ProviderError(f"source {source} has no compose file for {self.environment.name.lower()}")
        if url.startswith("file://"):
            return ComposeSpec.load(url[len("file://"):])
        import requests

        body = requests.get(url, timeout=30)
        body.raise_for_status()
        path = self._workdir / source / "docker-compose.yml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body.content)
        return ComposeSpec.load(path)

    def service_for(self, source: str) -> RunningService:
        """The source's service, started on first use and kept warm."""
        with self._lock:
            warm = self._services.get(source)
            if warm is not None and warm.service.alive():
                warm.last_used = time.time()
                return warm.service
            service = self.backend.start(self.compose_for(source), self.environment, callback_url=self.receiver.url,
                                         log=lambda line: self.service_log(source, line))
            self._services[source] = _Warm(service)
            return service

    def reap_idle(self, max_idle_s: float) -> list[str]:
        """Stops services unused for `max_idle_s`; returns their sources."""
        now = time.time()
        with self._lock:
            idle = [s for s, w in self._services.items() if now - w.last_used > max_idle_s]
            for s in idle:
                self._services.pop(s).service.stop()
        return idle

    # ---- tasks ----

    def attempt(self, tasks: Sequence[str], prices: Sequence[int] | None = None) -> list[str]:
        """Attempts tasks (pipelined), asking `prices` (default: each task's payment); returns
        those whose attempt was mined."""
        if not tasks:
            return []
        if prices is None:
            prices = self.chain.read_many([(self.chain.task(t), "getPayment", ()) for t in tasks])
        calls = [self.chain.nexus.attempt(t, self.address, p) for t, p in zip(tasks, prices)]
        receipts = self.sender.wait(self.sender.send(calls, 300_000), check=False)
        return [t for t, r in zip(tasks, receipts) if r.status == 1]

    def execute(self, task: str, *, payment: int | None = None, max_runtime_s: float | None = None) -> Executed:
        """Runs an attempted task through its source's service and submits the response. A task
        we already answered (a restart after a crash) is not run or submitted again; one that is
        final or expired raises TaskTakenError without a transaction."""
        t = self.chain.task(task)
        (source, config_url, expiry, task_payment), done = self.chain.read_many(
            [(t, "taskParams", ()), (t, "responseOf", (self.address,))])
        if int(done, 16):
            _, _, data_url, paid = self.chain.response(done).response_params()
            return Executed(done, data_url, paid, resumed=True)
        self._check_open(task, expiry)
        config = self.fetch(config_url)
        if not isinstance(config, dict) or not config.get("function_name"):
            raise ProviderError(f"task {task}: config at {config_url} has no function_name")
        # The chain's clock may differ from ours (anvil's can be moved): count the time left on it.
        left = expiry - self.chain.now() - DEADLINE_MARGIN_S
        deadline = time.time() + min(left, max_runtime_s or left)
        service = self.service_for(source)
        ServiceClient(service.base_url).submit(config["function_name"], task, config.get("data", {}))
        try:
            result = self.receiver.wait(task, deadline)
        except ServiceError as e:
            raise ProviderError(str(e)) from None
        url = self.store.put_json({"task": task, "provider": self.address, "result": result}, field="result")
        self._check_open(task, expiry)
        asked = task_payment if payment is None else payment
        receipt = self.sender.transact(self.chain.nexus.submit_response(ResponseParams(task, self.address, url, asked)))
        return Executed(created_address(receipt, "ResponseSubmitted", "response", self.chain.network.nexus), url, asked)

    def _check_open(self, task: str, expiry: int) -> None:
        status = self.chain.task(task).get_status()
        if status not in (TaskStatus.NEW, TaskStatus.ATTEMPTED, TaskStatus.RESPONDED):
            raise TaskTakenError(f"task {task} is {status.name}: nothing to answer")
        if self.chain.now() >= expiry:
            raise TaskTakenError(f"task {task} expired before our response")

    def stop_service(self, source: str) -> None:
        """Stops `source`'s warm service, if any (the next task starts a fresh one)."""
        with self._lock:
            warm = self._services.pop(source, None)
        if warm is not None:
            warm.service.stop()

    def cancel(self, task: str) -> None:
        """Stops waiting for `task`'s result (its execute raises ProviderError)."""
        self.receiver.cancel(task)

    def close(self) -> None:
        with self._lock:
            for warm in self._services.values():
                warm.service.stop()
            self._services.clear()
        self.receiver.stop()
