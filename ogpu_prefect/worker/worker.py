"""The `ogpu-provider` Prefect worker: a provider's fleet is a work pool of this type.

    prefect work-pool create my-gpus --type ogpu-provider     # then set the job variables
    prefect worker start --pool my-gpus --type ogpu-provider

On start the worker reads its pool's job variables (network, wallet and storage blocks, sources,
environment, backend, ...), ensures the provider's standing on chain (stake locked, registered to
each source with its environment), removes what a killed predecessor left running, and ensures a
deployment `ogpu-provider-task/<provider>` in its own work queue of the pool. Then it watches the
chain: each task published on one of its sources is offered to the task policy (plugin hook
`ogpu_prefect_task_policies`); the tasks it takes are attempted (pipelined) and executed at once,
in the worker: the source's service runs warm through the hardware backend, gets the task's input
over HTTP and answers on the callback; the worker stores the result and submits the response on
chain (responses that are ready together go out as one pipelined batch).

Each task is one flow run of that deployment (idempotency key: chain + provider + task +
publication, so one flow run per task across restarts), written by the journal (journal.py) in
bulk and off the critical path: created Running, then Completed, Failed or Cancelled, with the
result artifact and the service's output in its logs. A slow Prefect API delays the records, never
a response. A flow run of the deployment started from the UI or the API runs through `run()`;
cancelling a task's flow run stops its wait and its service.
"""

from __future__ import annotations

import logging
import os
import random
import time
from dataclasses import replace
from typing import Any, Literal
from uuid import UUID

import anyio
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.workers.base import BaseJobConfiguration, BaseVariables, BaseWorker, BaseWorkerResult
from pydantic import Field

from ..chain.errors import OGPUError
from ..chain.events import decode_logs, iter_logs, topic
from ..chain.types import DeliveryMethod, Environment, TaskStatus
from ..events import emit_provider_event, emit_service_event
from .journal import FlowRunJournal
from .policy import TaskOffer
from .provider import Executed, Provider, ProviderError, TaskTakenError
from .service import ServiceError

DOCS = "https://github.com/ogpu-prefect/ogpu-prefect/blob/main/docs/worker.md"
FLOW_NAME = "ogpu-provider-task"
ROUTE_MAX = 8
TAKEN_CHECK_S = 2.0
"""Seconds between checks that the tasks we are running are still open (`Provider.give_up_taken`)."""
WALLET_ENV = "OGPU_PROVIDER_WALLET_BLOCK"
"""Set in a worker's environment, it names the wallet block that worker uses instead of the pool's
`wallet_block`: several machines, each with its own provider key, serve one pool."""


class ProviderJobConfiguration(BaseJobConfiguration):
    """What an `ogpu-provider` worker runs with (its pool's job variables)."""

    network_block: str = Field(default="devnet")
    wallet_block: str = Field(default="provider")
    storage_block: str = Field(default="devnet")
    sources: list[str] = Field(default_factory=list)
    environment: Literal["cpu", "nvidia", "amd"] = Field(default="cpu")
    backend: str = Field(default="local")
    backend_options: dict[str, Any] = Field(default_factory=dict)
    max_concurrent_tasks: int = Field(default=8, ge=1)
    task_policy: str = Field(default="take_all")
    task_policy_options: dict[str, Any] = Field(default_factory=dict)
    stake_wei: int | None = Field(default=None)
    max_runtime_s: float | None = Field(default=None)
    idle_timeout_s: float = Field(default=300.0)
    warm_on_start: bool = Field(default=True)
    poll_interval_s: float = Field(default=0.25)
    lookback_blocks: int = Field(default=10_000)


class ProviderVariables(BaseVariables):
    """The job variables of an `ogpu-provider` work pool, shown in its form in the UI."""

    network_block: str = Field(default="devnet", description="Name of the OGPUNetwork block (chain and contracts).")
    wallet_block: str = Field(default="provider", description="Name of the OGPUWallet block: the provider's key.")
    storage_block: str = Field(default="devnet", description="Name of the OGPUStorage block where results are written.")
    sources: list[str] = Field(default_factory=list, description="Addresses of the sources this fleet serves.")
    environment: Literal["cpu", "nvidia", "amd"] = Field(
        default="cpu", description="Hardware environment registered on chain and used to pick the compose file.")
    backend: str = Field(default="local", description="Hardware backend plugin that runs the services (local, docker, ...).")
    backend_options: dict[str, Any] = Field(default_factory=dict, description="Options for the hardware backend.")
    max_concurrent_tasks: int = Field(default=8, ge=1, description="Tasks this worker runs at once.")
    task_policy: str = Field(default="take_all", description="Task policy plugin: which tasks to take, at what price.")
    task_policy_options: dict[str, Any] = Field(default_factory=dict, description="Options for the task policy.")
    stake_wei: int | None = Field(
        default=None, description="Stake to keep locked (default: what the sources require).")
    max_runtime_s: float | None = Field(
        default=None, description="Longest a task may run (it never runs past the task's expiry).")
    idle_timeout_s: float = Field(default=300.0, description="Seconds a source's service stays warm without tasks.")
    warm_on_start: bool = Field(
        default=True, description="Start the sources' services when the worker starts, not on their first task.")
    poll_interval_s: float = Field(default=0.25, description="Seconds between chain polls for new tasks.")
    lookback_blocks: int = Field(
        default=10_000, description="Blocks scanned back on start, for tasks published while the worker was down.")


class ProviderWorkerResult(BaseWorkerResult):
    """The outcome of one task's flow run (status_code 0: the worker set its final state)."""


class OGPUProviderWorker(BaseWorker[ProviderJobConfiguration, ProviderVariables, ProviderWorkerResult]):
    type = "ogpu-provider"
    job_configuration = ProviderJobConfiguration
    job_configuration_variables = ProviderVariables
    _description = "Earn on OpenGPU: attempt the tasks of your sources and run them through their compose services."
    _documentation_url = DOCS
    _logo_url = "https://avatars.githubusercontent.com/u/39270919?s=200&v=4"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.provider: Provider | None = None
        self.config: ProviderJobConfiguration | None = None
        self.journal: FlowRunJournal | None = None
        self._deployment_id: UUID | None = None
        self._inflight: dict[str, str] = {}  # task -> source, while executing
        self._ended: dict[str, tuple[str, float]] = {}  # recently ended task -> (source, when)
        self._stop = anyio.Event()
        self._wake = anyio.Event()  # a slot freed: poll now
        self._policy: Any = None
        self._published: dict[str, str] = {}  # task -> hash of the tx that published it
        self._resumed: set[str] = set()  # tasks whose left-open flow runs this start resumed

    # ---- start and stop ----

    async def setup(self) -> None:
        await super().setup()
        if self._work_pool is None:
            raise RuntimeError(f"work pool {self._work_pool_name!r} is not reachable")
        self.config = await ProviderJobConfiguration.from_template_and_values(
            self.work_pool.base_job_template, {}, client=self.client)
        if os.environ.get(WALLET_ENV):  # one pool, one key per machine: the fleet's usual shape
            self.config.wallet_block = os.environ[WALLET_ENV]
        await self._start_provider(self.config)
        assert self._runs_task_group is not None and self.journal is not None
        self._runs_task_group.start_soon(self.journal.run, self._stop)
        await self._resume_open_runs()
        if self.config.warm_on_start:
            self._runs_task_group.start_soon(self._warm_services)
        self._runs_task_group.start_soon(self._watch_chain)
        self._runs_task_group.start_soon(self._watch_cancellations)

    async def teardown(self, *exc_info: Any) -> None:
        self._stop.set()
        self._wake.set()
        if self.provider is not None:
            for task in list(self._inflight):
                self.provider.cancel(task)
            await anyio.to_thread.run_sync(self.provider.close)
        if self.journal is not None:
            with anyio.move_on_after(15):  # what ended gets recorded
                while self._inflight:
                    await anyio.sleep(0.05)
                while self.journal.pending():
                    try:
                        await self.journal.flush()
                    except Exception as e:
                        self._logger.warning("could not record %d task(s) in Prefect: %s", self.journal.pending(), e)
                        break
        await super().teardown(*exc_info)

    async def _start_provider(self, config: ProviderJobConfiguration) -> None:
        from ..blocks import OGPUNetwork, OGPUStorage, OGPUWallet
        from ..plugins import get_hardware_backend, get_task_policy

        network = await OGPUNetwork.aload(config.network_block)
        wallet = await OGPUWallet.aload(config.wallet_block)
        storage = await OGPUStorage.aload(config.storage_block)
        self._policy = get_task_policy(config.task_policy, **config.task_policy_options)
        backend = get_hardware_backend(config.backend, owner=wallet.address, **config.backend_options)
        environment = Environment[config.environment.upper()]

        def start() -> Provider:
            reaped = backend.reap()
            if reaped:
                self._logger.warning("stopped %d service(s) left running by an earlier worker", reaped)
            provider = Provider(network.connect(), wallet.signer(), storage.store(), backend, environment,
                                service_log=self._route_log,
                                on_service=lambda change, source: emit_service_event(change, wallet.address, source))
            provider.ensure_standing(config.sources, stake=config.stake_wei)
            return provider

        self.provider = await anyio.to_thread.run_sync(start)
        flow_id, self._deployment_id = await self._ensure_deployment()
        self._work_queues.add(self._queue_name)
        self.journal = FlowRunJournal(self.client, self._deployment_id, flow_id, self._work_pool_name, self._queue_name,
                                      ["ogpu-provider"],
                                      self.get_flow_run_logger, self._logger)
        self._logger.info("provider %s serves %d source(s) on %s with the %s backend", self.provider.address,
                          len(config.sources), config.environment, config.backend)

    @property
    def _queue_name(self) -> str:
        assert self.provider is not None
        return f"provider-{self.provider.address.lower()}"

    async def _ensure_deployment(self) -> tuple[UUID, UUID]:
        """One deployment per provider in the pool, in the provider's own queue: two providers'
        workers in one pool never pick up each other's tasks."""
        from prefect.exceptions import ObjectAlreadyExists

        assert self.provider is not None
        try:
            await self.client.create_work_queue(name=self._queue_name, work_pool_name=self._work_pool_name)
        except ObjectAlreadyExists:
            pass
        flow_id = await self.client.create_flow_from_name(FLOW_NAME)
        deployment_id = await self.client.create_deployment(
            flow_id=flow_id, name=self.provider.address, work_pool_name=self._work_pool_name,
            work_queue_name=self._queue_name, tags=["ogpu-provider"],
            description=f"OpenGPU tasks executed by provider {self.provider.address}",
            parameter_openapi_schema={"type": "object", "properties": {
                "task": {"type": "string"}, "source": {"type": "string"},
                "payment": {"type": "string", "description": "asked payment, in wei"}}},
        )
        return flow_id, deployment_id

    async def _resume_open_runs(self) -> None:
        """Flow runs a killed predecessor left Running or Pending are executed again: a task we
        already answered is only recorded (`Provider.execute` asks the chain first)."""
        from prefect.client.schemas.filters import (
            FlowRunFilter, FlowRunFilterDeploymentId, FlowRunFilterState, FlowRunFilterStateType)

        flt = FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[self._deployment_id]),
                            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING, StateType.PENDING])))
        runs: list[FlowRun] = []
        while True:  # 200: the server's page limit
            page = await self.client.read_flow_runs(flow_run_filter=flt, limit=200, offset=len(runs))
            runs += page
            if len(page) < 200:
                break
        if not runs:
            return
        provider = self.provider
        assert provider is not None and self.journal is not None
        pairs = [(r.parameters["task"], _publication(r.idempotency_key)) for r in runs]
        try:
            live = await anyio.to_thread.run_sync(lambda: provider.live_attempts(pairs))
        except Exception as e:  # resume them all: execute tells a lost task by its error
            self._logger.warning("could not check the %d left-open task(s) on chain (%s)", len(runs), e)
            live = [True] * len(runs)
        resumed, stale, twins, seen = [], [], [], set()
        for run, ok in zip(runs, live):
            task = run.parameters["task"].lower()
            if not ok:
                stale.append(run)
            elif task in seen:  # one run per task executes it
                twins.append(run)
            else:
                resumed.append(run)
                seen.add(task)
        closing = [(stale, "the task is not on this chain any more (reverted or reorganised), "
                           "or this provider never attempted it"),
                   (twins, "another flow run of this deployment records this task")]
        for group, message in closing:
            if not group:
                continue
            self._logger.info("closing %d left-open flow run(s): %s", len(group), message)
            try:
                await self.journal.close_runs([r.id for r in group], "CANCELLED", message)
            except Exception as e:  # the next start closes them
                self._logger.warning("could not close %d flow run(s): %s", len(group), e)
        self._resumed = {r.parameters["task"].lower() for r in resumed}  # the first scan skips them
        for run in resumed:
            p = run.parameters
            if self._start(p["task"], p["source"], int(p.get("payment") or 0), run_id=run.id,
                           note="resumed after a worker restart"):
                emit_provider_event("resumed", provider.address, p["task"], p["source"])
        if resumed:
            self._logger.info("resuming %d task(s) left open by an earlier worker", len(resumed))

    async def _warm_services(self) -> None:
        """Starts each source's service now: the first task then finds it warm (in a
        FIRST_RESPONSE race, a cold start loses). A source that fails here is retried by its first task."""
        assert self.provider is not None and self.config is not None
        provider = self.provider
        for source in self.config.sources:
            try:
                await anyio.to_thread.run_sync(lambda: provider.service_for(source))
            except Exception as e:
                self._logger.warning("could not warm the service of source %s: %s", source, e)

    # ---- the chain watcher ----

    async def _watch_chain(self) -> None:
        assert self.provider is not None and self.config is not None
        provider, config = self.provider, self.config
        chain = provider.chain
        sources = {s.lower() for s in config.sources}
        published, attempted = topic("Nexus", "TaskPublished"), topic("Nexus", "Attempted")
        me = provider.address.lower()
        head = await anyio.to_thread.run_sync(chain.block_number)
        cursor = max(head - config.lookback_blocks, 0)
        waiting: dict[str, TaskOffer] = {}
        first = True
        checked = time.monotonic()
        while not self._stop.is_set():
            try:
                head = await anyio.to_thread.run_sync(chain.block_number)
                if head >= cursor:
                    logs = await anyio.to_thread.run_sync(
                        lambda: decode_logs(iter_logs(chain.rpc, chain.network.nexus, [published, attempted], cursor, head)))
                    tasks = {e["task"]: e.tx_hash for e in logs
                             if e.name == "TaskPublished" and e["source"].lower() in sources}
                    cursor = head + 1
                    if tasks:
                        await self._consider(tasks, waiting, resume=first)
                    for e in logs:  # others' attempts: their races come after untouched tasks
                        offer = waiting.get(e["task"]) if e.name == "Attempted" else None
                        if offer is not None and e["provider"].lower() != me:
                            waiting[offer.task] = replace(offer, attempts=offer.attempts + 1)
                first = False
                await self._take(waiting)
                if self._inflight and time.monotonic() - checked > TAKEN_CHECK_S:
                    checked = time.monotonic()
                    running = list(self._inflight)
                    for t in await anyio.to_thread.run_sync(lambda: provider.give_up_taken(running)):
                        self._logger.info("task %s closed without our response: stopped waiting for it", t)
            except Exception:  # the chain hiccuped: keep watching
                self._logger.exception("chain watch failed; retrying")
                await anyio.sleep(1.0)
            with anyio.move_on_after(config.poll_interval_s):
                await self._wake.wait()
            self._wake = anyio.Event()
            if self.provider is not None:
                await anyio.to_thread.run_sync(lambda: provider.reap_idle(config.idle_timeout_s))

    async def _consider(self, published: dict[str, str], waiting: dict[str, TaskOffer], *, resume: bool) -> None:
        """Sorts new tasks (task -> publishing tx): ours from before a restart are resumed, open
        ones wait for the policy."""
        assert self.provider is not None
        provider = self.provider
        chain = provider.chain
        self._published.update(published)
        tasks = [t for t in published if t not in self._inflight and t not in waiting]
        if not tasks:
            return

        def read() -> tuple[list[Any], list[Any], int]:
            calls = [(chain.task(t), "core", ()) for t in tasks] + \
                    [(chain.task(t), "attempterId", (provider.address,)) for t in tasks]
            out = chain.read_many(calls)
            return out[:len(tasks)], out[len(tasks):], chain.now()

        cores, mine, now = await anyio.to_thread.run_sync(read)
        provider.clock.set(now)
        for t, (source, _client, payment, expiry, method, status), attempter in zip(tasks, cores, mine):
            if status not in (TaskStatus.NEW, TaskStatus.ATTEMPTED, TaskStatus.RESPONDED) or expiry <= now:
                self._published.pop(t, None)
            elif attempter:  # ours, from before a restart
                if resume and t.lower() not in self._resumed:
                    if self._start(t, source, payment, resumed=True):
                        emit_provider_event("resumed", provider.address, t, source)
                else:
                    self._published.pop(t, None)
            else:
                waiting[t] = TaskOffer(t, source, payment, expiry, DeliveryMethod(method), expiry - now)

    async def _take(self, waiting: dict[str, TaskOffer]) -> None:
        """Offers waiting tasks to the policy, within free capacity."""
        assert self.provider is not None and self.config is not None
        provider = self.provider
        free = self.config.max_concurrent_tasks - len(self._inflight)
        if free <= 0 or not waiting:
            return
        now = provider.clock.now()
        chosen: list[tuple[TaskOffer, int]] = []
        # Soonest expiry first; on FIRST_RESPONSE sources untouched tasks first (another
        # provider's attempt is a race we likely lose); ties in random order, so that workers
        # polling the same batch mostly pick different tasks.
        order = sorted(waiting.values(), key=lambda o: (
            o.delivery_method is DeliveryMethod.FIRST_RESPONSE and o.attempts > 0, o.expiry_time, random.random()))
        for offer in order:
            if len(chosen) >= free:
                break
            waiting.pop(offer.task)
            price = self._policy.price(replace(offer, seconds_left=offer.expiry_time - now))
            if price is not None and offer.expiry_time > now:
                chosen.append((offer, min(int(price), offer.payment)))
            else:
                self._published.pop(offer.task, None)
        for t in [t for t, o in waiting.items() if o.expiry_time <= now]:
            waiting.pop(t)  # best effort: the chain decides expiry; stale entries are just dropped
            self._published.pop(t, None)
        if not chosen:
            return
        for offer, _ in chosen:  # hold the slots while the attempts are mined
            self._inflight[offer.task] = offer.source
        try:
            attempted = set(await anyio.to_thread.run_sync(
                lambda: provider.attempt([o.task for o, _ in chosen], [p for _, p in chosen])))
        finally:
            for offer, _ in chosen:
                self._inflight.pop(offer.task, None)
        for offer, price in chosen:
            if offer.task in attempted:
                emit_provider_event("attempted", provider.address, offer.task, offer.source, {"payment": str(price)})
                self._start(offer.task, offer.source, price)
            else:
                self._published.pop(offer.task, None)

    def _start(self, task: str, source: str, payment: int, *, resumed: bool = False, run_id: UUID | None = None,
               note: str = "resumed after a worker restart") -> bool:
        """Executes an attempted task now; the journal records it as a flow run meanwhile.
        `resumed` or `run_id` (an existing flow run): the run is set Running with `note`. False if
        the task was executing already."""
        assert self.provider is not None and self.journal is not None and self._runs_task_group is not None
        if task in self._inflight:
            if run_id is not None:
                self.journal.start(task, {}, "", run_id=run_id, note=note)
            return False
        # The key names the publication too: a task address can come back on a chain that was
        # reverted (a devnet snapshot) or reorganised, and that is a new task.
        key = f"{self.provider.chain.network.chain_id}:{self.provider.address}:{task}:{self._published.pop(task, '')}"
        self.journal.start(task, {"task": task, "source": source, "payment": str(payment)}, key.lower(),
                           resumed=resumed, run_id=run_id, note=note)
        self._inflight[task] = source
        self._runs_task_group.start_soon(self._execute, task, source, payment)
        return True

    async def _execute(self, task: str, source: str, payment: int) -> None:
        assert self.provider is not None and self.journal is not None and self.config is not None
        provider, journal = self.provider, self.journal
        max_runtime = self.config.max_runtime_s
        journal.log(task, logging.INFO, f"running task {task} of source {source}")
        started = time.time()
        try:
            done: Executed = await anyio.to_thread.run_sync(
                lambda: provider.execute(task, payment=payment or None, max_runtime_s=max_runtime))
        except TaskTakenError as e:
            journal.log(task, logging.INFO, str(e))
            journal.end(task, "CANCELLED", _reason(e))
            return
        except (ProviderError, ServiceError, OGPUError) as e:
            cancelled = "cancelled" in str(e)
            journal.log(task, logging.ERROR, f"task {task}: {e}")
            journal.end(task, "CANCELLED" if cancelled else "FAILED", str(e)[:1000])
            emit_provider_event("failed", provider.address, task, source, {"error": str(e)[:500]})
            return
        except Exception as e:
            self._logger.exception("task %s failed unexpectedly", task)
            journal.end(task, "FAILED", f"{type(e).__name__}: {e}"[:1000])
            return
        finally:
            self._inflight.pop(task, None)
            self._ended[task] = (source.lower(), time.monotonic())
            while len(self._ended) > 256:
                self._ended.pop(next(iter(self._ended)))
            self._wake.set()
        latency = time.time() - started
        note = "already answered before a restart" if done.resumed else f"answered in {latency:.2f}s"
        journal.log(task, logging.INFO, f"response {done.response} submitted ({note}); result at {done.data_url}")
        emit_provider_event("responded", provider.address, task, source,
                            {"response": done.response, "data_url": done.data_url, "payment": str(done.payment)})
        journal.end(task, "COMPLETED", "response submitted on chain", artifact=(
            f"### OpenGPU task {task}\n\n| | |\n|---|---|\n| source | `{source}` |\n"
            f"| response | `{done.response}` |\n| result | {done.data_url} |\n"
            f"| payment (wei) | {done.payment} |\n| run time | {latency:.2f} s |\n"))

    # ---- flow runs started from Prefect ----

    async def run(self, flow_run: FlowRun, configuration: ProviderJobConfiguration,
                  task_status: anyio.abc.TaskStatus[str] | None = None) -> ProviderWorkerResult:
        """A flow run of the deployment started from the UI or the API (its task must be one this
        provider attempted): executed like any other, recorded on that flow run."""
        assert self.provider is not None
        task, source = flow_run.parameters["task"], flow_run.parameters["source"]
        identifier = f"{self.provider.address}:{task}"
        if task_status is not None:
            task_status.started(identifier)
        self._start(task, source, int(flow_run.parameters.get("payment") or 0), run_id=flow_run.id,
                    note="started from Prefect")
        while task in self._inflight:
            await anyio.sleep(0.2)
        return ProviderWorkerResult(identifier=identifier, status_code=0)

    async def _get_scheduled_flow_runs(self) -> list[Any]:
        # Only our own deployment's runs: a pool may hold several providers' queues.
        runs = await super()._get_scheduled_flow_runs()
        return [r for r in runs if r.flow_run.deployment_id == self._deployment_id]

    def _route_log(self, source: str, line: str) -> None:
        """A service output line goes to the flow runs of the tasks it names, else to those of the
        source's running tasks (one warm service serves them all) when at most ROUTE_MAX run,
        else to the worker's log."""
        lowered = line.lower()
        running = [t for t, s in list(self._inflight.items()) if s.lower() == source.lower()]
        if not running:  # output can trail its task's end (docker's log stream lags)
            now = time.monotonic()
            running = [t for t, (s, ended) in list(self._ended.items()) if s == source.lower() and now - ended < 5]
        # A line naming no task is copied to the tasks it may belong to, while they are few.
        targets = [t for t in running if t.lower() in lowered] or (running if len(running) <= ROUTE_MAX else [])
        for t in targets:
            self.journal.log(t, logging.INFO, f"[service] {line}")  # type: ignore[union-attr]
        if not targets:
            self._logger.info("[%s] %s", source[:10], line)

    # ---- cancellation ----

    async def _watch_cancellations(self) -> None:
        """Prefect cancellation of a running task's flow run stops its wait and its service."""
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterState, FlowRunFilterStateType
        while not self._stop.is_set():
            with anyio.move_on_after(2.0):
                await self._stop.wait()
            open_runs = self.journal.open_runs() if self.journal is not None else {}
            if not open_runs or self._stop.is_set():
                continue
            try:
                runs = await self.client.read_flow_runs(flow_run_filter=FlowRunFilter(
                    id=FlowRunFilterId(any_=list(open_runs)), state=FlowRunFilterState(type=FlowRunFilterStateType(
                        any_=[StateType.CANCELLING]))))
            except Exception:
                self._logger.debug("cancellation poll failed", exc_info=True)
                continue
            for run in runs:
                await self.kill_infrastructure(f"{self.provider.address}:{open_runs[run.id]}", self.config)  # type: ignore[union-attr,arg-type]

    async def kill_infrastructure(self, infrastructure_pid: str, configuration: ProviderJobConfiguration,
                                  grace_seconds: int = 30) -> None:
        """Stops the task named by `infrastructure_pid` (`provider:task`): its wait ends and its
        source's service is stopped (the next task of that source starts a fresh one)."""
        from prefect.exceptions import InfrastructureNotAvailable

        if self.provider is None:
            raise InfrastructureNotAvailable("the provider is not running in this worker")
        owner, _, task = infrastructure_pid.partition(":")
        if owner.lower() != self.provider.address.lower():
            raise InfrastructureNotAvailable(f"{infrastructure_pid} belongs to another provider")
        provider = self.provider

        def kill() -> None:
            provider.cancel(task)
            source = provider.chain.task(task).get_source()
            provider.stop_service(source)

        await anyio.to_thread.run_sync(kill)


def _publication(key: str | None) -> str:
    """The publishing tx hash in a flow run's idempotency key (`chain:provider:task:tx`), or ""."""
    parts = (key or "").split(":")
    return parts[3] if len(parts) == 4 and parts[3].startswith("0x") else ""


def _reason(e: TaskTakenError) -> str:
    """A task-free message, so that tasks ended for one reason are closed in one request."""
    text = str(e)
    if "expired" in text.lower():
        return "expired before our response"
    if "not on this chain" in text:
        return "the task is not on this chain any more (reverted or reorganised)"
    return "cancelled by its client" if "CANCELED" in text else "finalized by another provider"
