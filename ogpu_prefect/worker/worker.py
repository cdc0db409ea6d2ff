"""The `ogpu-provider` Prefect worker: a provider's fleet is a work pool of this type.

    prefect work-pool create my-gpus --type ogpu-provider     # then set the job variables
    prefect worker start --pool my-gpus --type ogpu-provider

On start the worker reads its pool's job variables (network, wallet and storage blocks, sources,
environment, backend, ...), ensures the provider's standing on chain (stake locked, registered to
each source with its environment), removes what a killed predecessor left running, and ensures a
deployment `ogpu-provider-task/<provider>` in its own work queue of the pool. Then it watches the
chain: each task published on one of its sources is offered to the task policy (plugin hook
`ogpu_prefect_task_policies`); the tasks it takes are attempted (pipelined) and each becomes one
flow run of that deployment (idempotency key: provider + task, so one flow run per task across
restarts). `run()` executes the flow run in the worker: the source's service runs warm through the
hardware backend, gets the task's input over HTTP, answers on the callback, and the worker stores
the result and submits the response on chain. Service output goes to the flow run's logs.

The flow run's states are set by the worker (Pending, Running, then Completed, Failed or
Cancelled), as the infrastructure of any worker does; there is no flow process to start, which
keeps a task's overhead to a few API calls.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import replace
from typing import Any, Literal
from uuid import UUID

import anyio
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.states import Cancelled, Completed, Failed, Running, Scheduled
from prefect.workers.base import BaseJobConfiguration, BaseVariables, BaseWorker, BaseWorkerResult
from pydantic import Field

from ..chain.errors import OGPUError
from ..chain.events import decode_logs, iter_logs, topic
from ..chain.types import DeliveryMethod, Environment, TaskStatus
from ..events import emit_provider_event
from .policy import TaskOffer
from .provider import Executed, Provider, ProviderError, TaskTakenError
from .service import ServiceError

TERMINAL = [StateType.COMPLETED, StateType.FAILED, StateType.CANCELLED, StateType.CRASHED]
DOCS = "https://github.com/ogpu-prefect/ogpu-prefect/blob/main/docs/worker.md"
FLOW_NAME = "ogpu-provider-task"
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
        self._deployment_id: UUID | None = None
        self._inflight: dict[str, UUID] = {}  # task -> flow run (UUID 0 while being created)
        self._running: set[str] = set()  # tasks inside run()
        self._relaunch: list[tuple[str, str, int]] = []  # attempted tasks whose flow run is not created yet
        # Few API writes at once: a Prefect server on SQLite answers a burst of concurrent writes
        # with lock waits and 503s, and serves them faster one after another.
        self._api_slots = anyio.Semaphore(4)
        self._routes: dict[str, dict[str, Any]] = {}  # source -> {task: flow-run logger}
        self._routes_lock = threading.Lock()
        self._stop = anyio.Event()
        self._policy: Any = None
        self._skew = 0.0  # chain clock minus ours (anvil's clock can be moved)
        self._published: dict[str, str] = {}  # task -> hash of the tx that published it

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
        assert self._runs_task_group is not None
        self._runs_task_group.start_soon(self._watch_chain)
        self._runs_task_group.start_soon(self._watch_cancellations)

    async def teardown(self, *exc_info: Any) -> None:
        self._stop.set()
        if self.provider is not None:
            for task in list(self._inflight):
                self.provider.cancel(task)
            await anyio.to_thread.run_sync(self.provider.close)
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
                                service_log=self._route_log)
            provider.ensure_standing(config.sources, stake=config.stake_wei)
            return provider

        self.provider = await anyio.to_thread.run_sync(start)
        self._deployment_id = await self._ensure_deployment()
        self._work_queues.add(self._queue_name)
        self._logger.info("provider %s serves %d source(s) on %s with the %s backend", self.provider.address,
                          len(config.sources), config.environment, config.backend)

    @property
    def _queue_name(self) -> str:
        assert self.provider is not None
        return f"provider-{self.provider.address.lower()}"

    async def _ensure_deployment(self) -> UUID:
        """One deployment per provider in the pool, in the provider's own queue: two providers'
        workers in one pool never pick up each other's tasks."""
        from prefect.exceptions import ObjectAlreadyExists

        assert self.provider is not None
        try:
            await self.client.create_work_queue(name=self._queue_name, work_pool_name=self._work_pool_name)
        except ObjectAlreadyExists:
            pass
        flow_id = await self.client.create_flow_from_name(FLOW_NAME)
        return await self.client.create_deployment(
            flow_id=flow_id, name=self.provider.address, work_pool_name=self._work_pool_name,
            work_queue_name=self._queue_name, tags=["ogpu-provider"],
            description=f"OpenGPU tasks executed by provider {self.provider.address}",
            parameter_openapi_schema={"type": "object", "properties": {
                "task": {"type": "string"}, "source": {"type": "string"},
                "payment": {"type": "string", "description": "asked payment, in wei"}}},
        )

    # ---- the chain watcher ----

    async def _watch_chain(self) -> None:
        assert self.provider is not None and self.config is not None
        provider, config = self.provider, self.config
        chain = provider.chain
        sources = {s.lower() for s in config.sources}
        published = topic("Nexus", "TaskPublished")
        head = await anyio.to_thread.run_sync(chain.block_number)
        cursor = max(head - config.lookback_blocks, 0)
        waiting: dict[str, TaskOffer] = {}
        first = True
        while not self._stop.is_set():
            try:
                head = await anyio.to_thread.run_sync(chain.block_number)
                if head >= cursor:
                    logs = await anyio.to_thread.run_sync(
                        lambda: iter_logs(chain.rpc, chain.network.nexus, [published], cursor, head))
                    tasks = {e["task"]: e.tx_hash for e in decode_logs(logs) if e["source"].lower() in sources}
                    cursor = head + 1
                    if tasks:
                        await self._consider(tasks, waiting, resume=first)
                first = False
                relaunch, self._relaunch = self._relaunch, []
                for task, source, payment in relaunch:
                    self._spawn_launch(task, source, payment)
                await self._take(waiting)
            except Exception:  # the chain or the API hiccuped: keep watching
                self._logger.exception("chain watch failed; retrying")
                await anyio.sleep(1.0)
            with anyio.move_on_after(config.poll_interval_s):
                await self._stop.wait()
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
        self._skew = now - time.time()
        resumed = []
        for t, (source, _client, payment, expiry, method, status), attempter in zip(tasks, cores, mine):
            if status not in (TaskStatus.NEW, TaskStatus.ATTEMPTED, TaskStatus.RESPONDED) or expiry <= now:
                continue
            if attempter:
                if resume:
                    resumed.append((t, source, payment))
                continue
            waiting[t] = TaskOffer(t, source, payment, expiry, DeliveryMethod(method), expiry - now)
        resumed_tasks = {t for t, _, _ in resumed}
        for t in tasks:
            if t not in waiting and t not in resumed_tasks:
                self._published.pop(t, None)
        for t, source, payment in resumed:
            self._spawn_launch(t, source, payment)

    async def _take(self, waiting: dict[str, TaskOffer]) -> None:
        """Offers waiting tasks to the policy, soonest expiry first, within free capacity."""
        assert self.provider is not None and self.config is not None
        provider = self.provider
        free = self.config.max_concurrent_tasks - len(self._inflight)
        if free <= 0 or not waiting:
            return
        now = time.time() + self._skew
        chosen: list[tuple[TaskOffer, int]] = []
        for offer in sorted(waiting.values(), key=lambda o: o.expiry_time):
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
        attempted = await anyio.to_thread.run_sync(
            lambda: provider.attempt([o.task for o, _ in chosen], [p for _, p in chosen]))
        for offer, price in chosen:
            if offer.task in attempted:
                emit_provider_event("attempted", provider.address, offer.task, offer.source, {"payment": str(price)})
                self._spawn_launch(offer.task, offer.source, price)
            else:
                self._published.pop(offer.task, None)

    def _spawn_launch(self, task: str, source: str, payment: int) -> None:
        """Launches without waiting: flow-run creations overlap (an API server on SQLite can stall
        a single write for seconds while others commit; in parallel those stalls overlap)."""
        assert self._runs_task_group is not None
        self._inflight[task] = self._inflight.get(task) or UUID(int=0)  # holds the capacity slot now
        self._runs_task_group.start_soon(self._launch, task, source, payment)

    async def _launch(self, task: str, source: str, payment: int) -> None:
        """The task's flow run (created once per provider and task) submitted to this worker."""
        try:
            await self._create_and_submit(task, source, payment)
        except Exception as e:
            self._inflight.pop(task, None)
            self._relaunch.append((task, source, payment))
            self._logger.warning("could not create the flow run of task %s (%s); retrying", task, e)

    async def _create_and_submit(self, task: str, source: str, payment: int) -> None:
        from prefect.client.schemas.responses import WorkerFlowRunResponse

        assert self.provider is not None and self._deployment_id is not None
        # The key names the publication too: a task address can come back on a chain that was
        # reverted (a devnet snapshot) or reorganised, and that is a new task.
        key = f"{self.provider.chain.network.chain_id}:{self.provider.address}:{task}:{self._published.pop(task, '')}"
        async with self._api_slots:
            flow_run = await self.client.create_flow_run_from_deployment(
                self._deployment_id, parameters={"task": task, "source": source, "payment": str(payment)},
                name=f"task-{task[2:10].lower()}", idempotency_key=key.lower(),
                tags=["ogpu-provider", f"source:{source.lower()[:10]}"], work_queue_name=self._queue_name)
        state = flow_run.state
        if state is not None and state.is_final():
            self._inflight.pop(task, None)
            return
        if state is not None and not state.is_scheduled():
            # Pending or Running under a worker that died (one provider runs one worker): resume it.
            flow_run.state = await self._force(flow_run.id, Scheduled(message="resumed after a worker restart"))
            emit_provider_event("resumed", self.provider.address, task, source)
        self._inflight[task] = flow_run.id
        await self._submit_scheduled_flow_runs([WorkerFlowRunResponse(
            work_pool_id=self.work_pool.id, work_queue_id=flow_run.work_queue_id or self.work_pool.id,
            flow_run=flow_run)])

    async def _submit_run(self, flow_run: FlowRun) -> None:
        # The base submission's API writes (Pending, labels, infrastructure id) share the slots.
        async with self._api_slots:
            await super()._submit_run(flow_run)

    async def _force(self, flow_run_id: UUID, state: Any) -> Any:
        async with self._api_slots:
            result = await self.client.set_flow_run_state(flow_run_id, state, force=True)
        return result.state

    async def _get_scheduled_flow_runs(self) -> list[Any]:
        # Only our own deployment's runs: a pool may hold several providers' queues.
        runs = await super()._get_scheduled_flow_runs()
        return [r for r in runs if r.flow_run.deployment_id == self._deployment_id]

    # ---- running one task ----

    async def run(self, flow_run: FlowRun, configuration: ProviderJobConfiguration,
                  task_status: anyio.abc.TaskStatus[str] | None = None) -> ProviderWorkerResult:
        assert self.provider is not None
        provider = self.provider
        task, source = flow_run.parameters["task"], flow_run.parameters["source"]
        payment = int(flow_run.parameters.get("payment") or 0) or None
        identifier = f"{provider.address}:{task}"
        self._inflight[task] = flow_run.id
        self._running.add(task)
        if task_status is not None:
            task_status.started(identifier)
        logger = self.get_flow_run_logger(flow_run)
        with self._routes_lock:
            self._routes.setdefault(source.lower(), {})[task.lower()] = logger
        started = time.time()
        try:
            await self._force(flow_run.id, Running())
            logger.info("running task %s of source %s", task, source)
            done: Executed = await anyio.to_thread.run_sync(
                lambda: provider.execute(task, payment=payment, max_runtime_s=configuration.max_runtime_s))
        except TaskTakenError as e:
            logger.info("%s", e)
            await self._force(flow_run.id, Cancelled(message=str(e)))
            return ProviderWorkerResult(identifier=identifier, status_code=0)
        except (ProviderError, ServiceError, OGPUError) as e:
            cancelled = "cancelled" in str(e)
            logger.error("task %s: %s", task, e)
            await self._force(flow_run.id, Cancelled(message=str(e)) if cancelled else Failed(message=str(e)))
            emit_provider_event("failed", provider.address, task, source, {"error": str(e)[:500]})
            return ProviderWorkerResult(identifier=identifier, status_code=0)
        except Exception as e:
            logger.exception("task %s failed unexpectedly", task)
            await self._force(flow_run.id, Failed(message=f"{type(e).__name__}: {e}"[:1000]))
            return ProviderWorkerResult(identifier=identifier, status_code=0)
        finally:
            self._inflight.pop(task, None)
            self._running.discard(task)
            with self._routes_lock:
                self._routes.get(source.lower(), {}).pop(task.lower(), None)
        latency = time.time() - started
        note = "already answered before a restart" if done.resumed else f"answered in {latency:.2f}s"
        logger.info("response %s submitted (%s); result at %s", done.response, note, done.data_url)
        emit_provider_event("responded", provider.address, task, source,
                            {"response": done.response, "data_url": done.data_url, "payment": str(done.payment)})
        await self._force(flow_run.id, Completed(message=f"response {done.response}"))
        await self._result_artifact(flow_run, task, source, done, latency)
        return ProviderWorkerResult(identifier=identifier, status_code=0)

    async def _result_artifact(self, flow_run: FlowRun, task: str, source: str, done: Executed, latency: float) -> None:
        from prefect.client.schemas.actions import ArtifactCreate

        body = (f"### OpenGPU task {task}\n\n| | |\n|---|---|\n| source | `{source}` |\n"
                f"| response | `{done.response}` |\n| result | {done.data_url} |\n"
                f"| payment (wei) | {done.payment} |\n| run time | {latency:.2f} s |\n")
        await self.client.create_artifact(ArtifactCreate(
            type="markdown", data=body, flow_run_id=flow_run.id, description="The task's on-chain response"))

    def _route_log(self, source: str, line: str) -> None:
        """A service output line goes to the flow runs of the tasks it names, else to all of the
        source's running tasks (one warm service serves them all), else to the worker's log."""
        with self._routes_lock:
            routes = dict(self._routes.get(source.lower(), {}))
        lowered = line.lower()
        targets = [lg for t, lg in routes.items() if t in lowered] or list(routes.values())
        for lg in targets:
            lg.info("[service] %s", line)
        if not targets:
            self._logger.info("[%s] %s", source[:10], line)

    # ---- cancellation ----

    async def _watch_cancellations(self) -> None:
        """Prefect cancellation of a running task's flow run stops its service wait and service; a
        submitted run that never reached `run()` (its Pending was refused) frees its slot."""
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterState, FlowRunFilterStateType
        while not self._stop.is_set():
            with anyio.move_on_after(2.0):
                await self._stop.wait()
            ids = [i for i in self._inflight.values() if i.int]
            if not ids or self._stop.is_set():
                continue
            try:
                runs = await self.client.read_flow_runs(flow_run_filter=FlowRunFilter(
                    id=FlowRunFilterId(any_=ids), state=FlowRunFilterState(type=FlowRunFilterStateType(
                        any_=[StateType.CANCELLING, *TERMINAL]))))
            except Exception:
                self._logger.debug("cancellation poll failed", exc_info=True)
                continue
            for run in runs:
                task = run.parameters["task"]
                if run.state_type is StateType.CANCELLING:
                    await self.kill_infrastructure(f"{self.provider.address}:{task}", self.config)  # type: ignore[union-attr,arg-type]
                elif task not in self._running:
                    self._inflight.pop(task, None)

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
