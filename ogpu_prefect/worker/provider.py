"""One provider account at work, without Prefect: its on-chain standing (stake, registrations),
warm services per source (through a hardware backend), and the execution of one task from
attempt to on-chain response. The `ogpu-provider` worker drives this.

Executing a task: read its config (PROTOCOL.md 6), send `data` to the source's service
(`POST /run/{function_name}/{task}`), wait for the callback no later than the task's expiry,
store the envelope `{"task", "provider", "result"}`, and submit its URL with `Nexus.submitResponse`.

With `provider=` another address, the signer works for that provider as its master or an agent of
its master (PROTOCOL.md 5.1): register, attempt and submitResponse name the provider and are
signed by the agent's key; the stake is the provider's own, which the agent cannot lock.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from ..agents import NotAgentError, acting_role
from ..backends import HardwareBackend, RunningService
from ..chain.connection import Chain, ChainClock
from ..chain.errors import InvalidInputError
from ..chain.rpc import http_session
from ..chain.signing import Signer
from ..chain.types import Environment, TaskStatus
from ..compose import ComposeSpec
from ..fetching import fetch_bytes, fetch_json, is_trusted
from ..standing import leave_sources, machine_hardware, machine_load, publish_data
from ..storage import IPFS_GATEWAY, PayloadStore
from ..validation import check_addresses, check_int
from .outcomes import (
    Executed,
    ProviderError,
    TakenReason,
    TaskCancelledError,
    TaskTakenError,
    closed_reason,
)
from .responder import Responder
from .service import CallbackReceiver, ServiceClient, ServiceError

log = logging.getLogger(__name__)

DEADLINE_MARGIN_S = 5
"""Seconds before a task's expiry by which its response must be on its way to the chain."""
MAX_COMPOSE_BYTES = 1024 * 1024
"""Largest compose file read from a source's metadata URL."""
AUTHORITY_CHECK_S = 10.0
"""Seconds an agent's authority, once read, is trusted before the next attempts read it again."""


@dataclass
class _Warm:
    service: RunningService
    last_used: float = field(default_factory=time.time)


class Provider:
    def __init__(
        self,
        chain: Chain,
        signer: Signer | Any,
        store: PayloadStore,
        backend: HardwareBackend,
        environment: Environment = Environment.CPU,
        *,
        fetch: Callable[[str], Any] | None = None,
        service_log: Callable[[str, str], None] | None = None,
        on_service: Callable[[str, str], None] | None = None,
        provider: str | None = None,
        config_origins: Sequence[str] | None = None,
    ) -> None:
        self.chain = chain
        self.sender = chain.sender(signer)
        self.address: str = provider or self.sender.address
        """The provider this account works as (the signer's own address, or `provider`)."""
        self.agent: str | None = None if self.address.lower() == self.sender.address.lower() else self.sender.address
        """The signer, when it signs for another provider (as its master or its master's agent)."""
        self._authority: tuple[float, str | None] = (float("-inf"), None)
        self.store = store
        self.backend = backend
        self.environment = environment
        self._http = http_session()  # one pool of kept-alive connections for service calls
        default = [*getattr(store, "trusted_origins", []), IPFS_GATEWAY]
        self.config_origins = list(config_origins or dict.fromkeys(default))
        """URL prefixes configs and source metadata are read from (fetching.py's rules): a URL on
        chain is chosen by a client, so anything else is refused unread. Default: where `store`
        is read, and the network's IPFS gateway."""
        self.fetch = fetch or partial(fetch_json, allowed_origins=self.config_origins)
        self.service_log = service_log or (lambda source, line: log.info("[%s] %s", source[:10], line))
        self.on_service = on_service or (lambda change, source: None)
        """Told ("started" | "stopped", source) when a source's service starts (ready) or stops."""
        self.receiver = CallbackReceiver().start()
        self.clock = ChainClock(chain, resync_s=2.0)
        self._responder = Responder(self.chain, self.sender, self.address, self._check_open)
        self._services: dict[str, _Warm] = {}
        self.attempt_blocks: dict[str, int] = {}  # task -> the block its attempt was mined in (records)
        self._lock = threading.Lock()
        self._workdir = Path(tempfile.mkdtemp(prefix="ogpu-provider-"))
        self._closed = threading.Event()  # stops the live data thread

    # ---- standing ----

    def ensure_standing(self, sources: Sequence[str], *, stake: int | None = None) -> None:
        """Locks enough stake (from the Vault balance, topped up from the wallet) and registers to
        each source with our environment. Idempotent. An agent checks its authority first and
        cannot lock the provider's stake: NotAgentError / InvalidInputError naming `providers`."""
        sources = check_addresses("sources", sources)
        stake = check_int("stake", stake, minimum=0, maximum=2**96 - 1, optional=True)
        if self.agent is not None:
            acting_role(self.chain, self.agent, self.address, field="providers")
        vault = self.chain.vault
        per_source = vault.MIN_LOCKUP_PER_SOURCE()
        terms = self.chain.read_many([self.chain.source(s).read.get_source_params() for s in sources])
        need = max([per_source * len(sources), *(t.minAvailableLockup for t in terms)], default=0)
        need = max(need, stake or 0)
        locked = vault.lockup_of(self.address)
        if locked < need and self.agent is not None:
            raise InvalidInputError(
                "providers",
                f"provider {self.address} has {locked} wei locked and needs {need}: its own key locks "
                "stake (Vault.lock), or its master funds it (announce_provider with an amount)",
            )
        if locked < need:
            short = need - locked
            free = vault.balance_of(self.address)
            if free < short:
                held = int(self.chain.rpc.call("eth_getBalance", [self.address, "latest"]), 16)
                if held <= short - free:  # (and gas): the node would say "insufficient funds for gas"
                    raise InvalidInputError(
                        "stake", f"locking {need} wei needs {short - free} more wei than {self.address} holds"
                    )
                self.sender.transact(vault.deposit(self.address, value=short - free))
            self.sender.transact(vault.lock(short))
        ids = self.chain.read_many([self.chain.source(s).read.registrant_id(self.address) for s in sources])
        envs = self.chain.read_many([self.chain.source(s).read.preferred_environment_of(self.address) for s in sources])
        todo = [s for s, i, e in zip(sources, ids, envs) if i == 0 or e != int(self.environment)]
        for s in todo:
            self.sender.transact(self.chain.nexus.register(s, self.address, int(self.environment)))

    def leave(self, sources: Sequence[str]) -> list[str]:
        """Unregisters from those of `sources` it is registered to; returns them (standing.py)."""
        return list(leave_sources(self.chain, self.sender, self.address, sources))

    def report_hardware(self) -> str | None:
        """Publishes this machine's hardware as the provider's base data on the Terminal; returns
        the transaction hash, or None when unchanged. Only the provider's own key may (msg.sender):
        an agent raises InvalidInputError naming `report_hardware`."""
        self._own_key("report_hardware")
        return publish_data(self.chain, self.sender, self.store, "base", machine_hardware())

    def report_live(self) -> str | None:
        """Publishes the provider's live data (warm services, load, free memory) on the Terminal."""
        self._own_key("live_data_interval_s")
        with self._lock:
            warm = sorted(self._services)
        doc = {"schema": "ogpu-prefect/live/1", "warm_sources": warm, "time": int(self.clock.now()), **machine_load()}
        return publish_data(self.chain, self.sender, self.store, "live", doc)

    def start_live_data(self, interval_s: float, on_error: Callable[[Exception], None]) -> None:
        """Publishes the live data every `interval_s` seconds, in a thread, until `close()`."""
        self._own_key("live_data_interval_s")

        def loop() -> None:
            while not self._closed.wait(interval_s):
                try:
                    self.report_live()
                except Exception as e:
                    on_error(e)

        threading.Thread(target=loop, daemon=True, name=f"ogpu-live-data-{self.address[:10]}").start()

    def _own_key(self, field: str) -> None:
        if self.agent is not None:
            raise InvalidInputError(field, f"the Terminal takes {self.address}'s data from its own key, not an agent's")

    # ---- services ----

    def compose_for(self, source: str) -> ComposeSpec:
        params = self.chain.source(source).get_source_params()
        metadata = self.fetch(params.imageMetadataUrl)
        url = (metadata or {}).get(self.environment.name.lower(), "")
        if not url:
            raise ProviderError(f"source {source} has no compose file for {self.environment.name.lower()}")
        if url.startswith("file://"):
            # A source published on this machine (the devnet's). On the real network a path is the
            # source owner's pick of a file on this host: read only under an allowed file:// origin.
            if not (self.chain.has_extensions() or is_trusted(url, self.config_origins)):
                raise ProviderError(f"source {source}'s compose file {url} is on this host and not allowed")
            return ComposeSpec.load(url[len("file://") :])
        # Chosen by the source's owner: any public https/http host, never this machine's network,
        # except the origins this provider's operator allowed (its storage on a private network,
        # as the configs'): named first, as the first matching prefix decides the address check.
        origins = [*self.config_origins, "https://", "http://"]
        body = fetch_bytes(url, allowed_origins=origins, timeout=30, max_bytes=MAX_COMPOSE_BYTES)
        path = self._workdir / source / "docker-compose.yml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
        return ComposeSpec.load(path)

    def service_for(self, source: str) -> RunningService:
        """The source's service, started on first use and kept warm."""
        with self._lock:
            warm = self._services.get(source)
            if warm is not None and warm.service.alive():
                warm.last_used = time.time()
                return warm.service
            service = self.backend.start(
                self.compose_for(source),
                self.environment,
                callback_url=self.receiver.url,
                log=lambda line: self.service_log(source, line),
            )
            self._services[source] = _Warm(service)
        self.on_service("started", source)
        return service

    def reap_idle(self, max_idle_s: float) -> list[str]:
        """Stops services unused for `max_idle_s`; returns their sources. Skipped while a service
        is starting (that holds the lock for seconds): the worker's chain watcher calls this every
        poll, and waiting here kept a warming worker from attempting any task."""
        now = time.time()
        if not self._lock.acquire(blocking=False):
            return []
        try:
            idle = [s for s, w in self._services.items() if now - w.last_used > max_idle_s]
            for s in idle:
                self._services.pop(s).service.stop()
        finally:
            self._lock.release()
        for s in idle:
            self.on_service("stopped", s)
        return idle

    # ---- tasks ----

    def attempt(self, tasks: Sequence[str], prices: Sequence[int] | None = None) -> list[str]:
        """Attempts tasks (pipelined), asking `prices` (default: each task's payment); returns
        those whose attempt was mined."""
        if not tasks:
            return []
        if prices is None:
            prices = self.chain.read_many([self.chain.task(t).read.get_payment() for t in tasks])
        calls = [self.chain.nexus.attempt(t, self.address, p) for t, p in zip(tasks, prices)]
        receipts = self.sender.wait(self.sender.send(calls, 300_000), check=False)
        if any(r.status != 1 for r in receipts):
            self._authority = (float("-inf"), None)  # a revoked agent fails here first: read it again
        for t, r in zip(tasks, receipts):
            if r.status == 1:
                self.attempt_blocks[t] = r.block_number
        while len(self.attempt_blocks) > 4096:  # taken by TaskRuns.start; bounded if not
            self.attempt_blocks.pop(next(iter(self.attempt_blocks)))
        return [t for t, r in zip(tasks, receipts) if r.status == 1]

    def authority_problem(self) -> str | None:
        """None while the signer may sign for the provider; else why not, in one line (its
        NotAgentError). Read at most every AUTHORITY_CHECK_S, and after a failed attempt."""
        if self.agent is None:
            return None
        read_at, problem = self._authority
        if time.monotonic() - read_at > AUTHORITY_CHECK_S:
            try:
                acting_role(self.chain, self.agent, self.address, field="providers")
                problem = None
            except NotAgentError as e:
                problem = str(e)
            self._authority = (time.monotonic(), problem)
        return problem

    def _on_chain(self, addresses: Sequence[str]) -> list[bool]:
        """Whether each address has code: a task of a chain that was reverted (a devnet
        snapshot) or reorganised has none. Only a definite answer counts as gone."""
        codes = self.chain.rpc.batch([("eth_getCode", [a, "latest"]) for a in addresses])
        return [code not in ("0x", "") for code in codes]

    def live_attempts(self, runs: Sequence[tuple[str, str]]) -> list[bool]:
        """For (task, hash of the tx that published it, or ""): whether that task is on this chain,
        from that publication, attempted by us. One that is not has nothing to resume: its
        address may come back as another task."""
        if not runs:
            return []
        receipts = iter(self.chain.rpc.batch([("eth_getTransactionReceipt", [h]) for _, h in runs if h]))
        published = [next(receipts) is not None if tx else True for _, tx in runs]  # None: reverted away
        live = [p and present for p, present in zip(published, self._on_chain([t for t, _ in runs]))]
        candidates = [t for (t, _), ok in zip(runs, live) if ok]
        ids = iter(self.chain.read_many([self.chain.task(t).read.attempter_id(self.address) for t in candidates]))
        return [ok and next(ids) != 0 for ok in live]

    def execute(self, task: str, *, payment: int | None = None, max_runtime_s: float | None = None) -> Executed:
        """Runs an attempted task through its source's service and submits the response. A task
        we already answered (a restart after a crash) is not run or submitted again; one that is
        final or expired raises TaskTakenError without a transaction. Thread-safe: many tasks run
        at once, and their responses are submitted together (`_Responder`)."""
        t = self.chain.task(task)
        (source, config_url, expiry, task_payment), done, status = self.chain.read_many(
            [t.read.task_params(), t.read.response_of(self.address), t.read.get_status()]
        )
        if int(done, 16):
            _, _, data_url, paid = self.chain.response(done).response_params()
            return Executed(done, data_url, paid, resumed=True)
        self._check_open(task, status, expiry)
        config = self.fetch(config_url)
        if not isinstance(config, dict) or not config.get("function_name"):
            raise ProviderError(f"task {task}: config at {config_url} has no function_name")
        left = expiry - self.clock.now() - DEADLINE_MARGIN_S
        deadline = time.time() + min(left, max_runtime_s or left)
        service = self.service_for(source)
        self.receiver.expect(task)
        try:
            ServiceClient(service.base_url, session=self._http).submit(
                config["function_name"], task, config.get("data", {})
            )
        except ServiceError as e:
            self.receiver.forget(task)
            raise ProviderError(str(e)) from None
        try:
            result = self.receiver.wait(task, deadline)
        except ServiceError as e:  # our deadline; a cancel raises its own error (TaskCancelledError, ...)
            raise ProviderError(str(e)) from None
        url = self.store.put_json({"task": task, "provider": self.address, "result": result}, field="result")
        asked = task_payment if payment is None else payment
        return self._responder.submit(task, url, asked, expiry).result()

    def _check_open(self, task: str, status: TaskStatus, expiry: int) -> None:
        closed = closed_reason(TaskStatus(status))
        if closed is not None:
            raise TaskTakenError(task, closed)
        if self.clock.now() >= expiry:
            raise TaskTakenError(task, TakenReason.EXPIRED)

    def stop_service(self, source: str) -> None:
        """Stops `source`'s warm service, if any (the next task starts a fresh one)."""
        with self._lock:
            warm = self._services.pop(source, None)
        if warm is not None:
            warm.service.stop()
            self.on_service("stopped", source)

    def cancel(self, task: str, why: str = "its flow run was cancelled") -> None:
        """Stops waiting for `task`'s result (its execute raises TaskCancelledError)."""
        self.receiver.cancel(task, TaskCancelledError(f"task {task}: {why}"))

    def give_up_taken(self, tasks: Sequence[str]) -> list[str]:
        """Stops waiting for those of `tasks` that closed without our response (another provider
        won, the client cancelled) or left the chain (a revert or reorg): their execute raises
        TaskTakenError now, not at the deadline. A lost callback otherwise held a slot, and its
        flow run, until expiry. (The service may still finish the work; its callback is dropped.)"""
        if not tasks:
            return []
        present = self._on_chain(tasks)
        live = [self.chain.task(t) for t, ok in zip(tasks, present) if ok]
        reads = iter(
            self.chain.read_many([r for t in live for r in (t.read.get_status(), t.read.response_of(self.address))])
        )
        taken = []
        for t, ok in zip(tasks, present):
            status, ours = (next(reads), next(reads)) if ok else (None, "0x0")
            if status is None:
                error = TaskTakenError(t, TakenReason.LEFT_CHAIN)
            elif TaskStatus(status).is_final and not int(ours, 16):
                error = TaskTakenError(t, closed_reason(TaskStatus(status)) or TakenReason.FINALIZED_ELSEWHERE)
            else:
                continue
            if self.receiver.cancel(t, error, if_expected=True):
                taken.append(t)
        return taken

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            stopped = list(self._services)
            for warm in self._services.values():
                warm.service.stop()
            self._services.clear()
        for source in stopped:
            self.on_service("stopped", source)
        self._responder.stop()
        self.receiver.stop()
