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
cancelling a task's flow run stops its wait (and its source's service, if no other task uses it).
With the pool's `providers` set, the wallet is their master's agent (docs/worker.md, "Agents").
"""

from __future__ import annotations

import sys
import time
from typing import Any
from uuid import UUID

import anyio
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.logging.loggers import get_worker_logger
from prefect.workers.base import BaseWorker, BaseWorkerResult

from .. import api_writer, events
from ..backends import owner_tag
from ..chain.errors import InvalidInputError
from ..chain.types import Environment
from ..events import emit_service_event
from ..prefect_compat import OwnRunsOnly, add_work_queue, runs_task_group, work_pool_name
from ..settings import get_settings
from .configuration import JobVariableError, ProviderJobConfiguration, ProviderVariables
from .execution import TaskRuns
from .journal import FlowRunJournal
from .key_lease import KeyGuard
from .provider import Provider
from .records import open_journal
from .resume import ensure_deployment, resume_left_open
from .standing import stand
from .summary import ProviderSummary
from .task_records import TaskRunJournal
from .watcher import ChainWatcher

DOCS = "https://github.com/ogpu-prefect/ogpu-prefect/blob/main/docs/worker.md"
TAKEN_CHECK_S = 2.0
"""Seconds between checks that the tasks we are running are still open (`Provider.give_up_taken`)."""


def worker_command(pool: str, name: str) -> list[str]:
    """The command that starts an `ogpu-provider` worker named `name` on `pool`."""
    return [
        sys.executable,
        "-m",
        "prefect",
        "worker",
        "start",
        "--pool",
        pool,
        "--type",
        "ogpu-provider",
        "--name",
        name,
    ]


class ProviderWorkerResult(BaseWorkerResult):
    """The outcome of one task's flow run (status_code 0: the worker set its final state)."""


class OGPUProviderWorker(OwnRunsOnly, BaseWorker[ProviderJobConfiguration, ProviderVariables, ProviderWorkerResult]):
    type = "ogpu-provider"
    job_configuration = ProviderJobConfiguration
    job_configuration_variables = ProviderVariables
    _display_name = "OpenGPU provider"
    _description = (
        "Earn on the OpenGPU network: serve your sources' tasks on this machine (processes or Docker, CPU or "
        "GPU), each task a flow run, its response signed by your wallet."
    )
    _documentation_url = DOCS
    _logo_url = "https://avatars.githubusercontent.com/u/39270919?s=200&v=4"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.provider: Provider | None = None
        self.config: ProviderJobConfiguration | None = None
        self.journal: FlowRunJournal | TaskRunJournal | None = None
        self.runs: TaskRuns | None = None
        self.summary: ProviderSummary | None = None
        self._deployment_id: UUID | None = None
        self._stop = anyio.Event()
        self._wake = anyio.Event()  # a slot freed: poll now
        self._policy: Any = None
        self._resumed: set[str] = set()  # tasks whose left-open flow runs this start resumed
        self._refused: str | None = None  # why an agent may not sign for its provider now
        self._key_lease: KeyGuard | None = None  # this worker alone takes tasks with its key

    @property
    def log(self) -> Any:
        """The worker's logger (Prefect's, with the worker's id once it has one)."""
        return get_worker_logger(self)

    def _related_resources(self) -> list[dict[str, str]]:
        """This worker and its work pool, as related resources of its events (as prefect-docker's)."""
        related = [
            {
                "prefect.resource.id": f"prefect.worker.{self.type}.{self.name}",
                "prefect.resource.role": "worker",
                "prefect.resource.name": self.name,
            }
        ]
        try:
            pool = self.work_pool
        except RuntimeError:  # not read yet
            return related
        related.append(
            {
                "prefect.resource.id": f"prefect.work-pool.{pool.id}",
                "prefect.resource.role": "work-pool",
                "prefect.resource.name": pool.name,
            }
        )
        return related

    # ---- start and stop ----

    async def setup(self) -> None:
        await super().setup()
        try:
            pool = self.work_pool
        except RuntimeError:
            raise RuntimeError(f"work pool {work_pool_name(self)!r} is not reachable") from None
        self.config = await ProviderJobConfiguration.for_worker(pool.base_job_template, self.client)
        own_wallet = get_settings().provider_wallet_block
        if own_wallet:  # one pool, one key per machine: the fleet's usual shape
            self.config.wallet_block = own_wallet
        await self._start_provider(self.config)
        assert self.journal is not None and self.provider is not None
        group = runs_task_group(self)
        self.runs = TaskRuns(
            self.provider,
            self.journal,
            group,
            self.log,
            max_runtime_s=self.config.max_runtime_s,
            freed=self._wake.set,
            related=self._related_resources,
        )
        group.start_soon(self.journal.run, self._stop)
        await self._resume_open_runs()
        if self.config.warm_on_start:
            group.start_soon(self._warm_services)
        group.start_soon(self._watch_chain)
        group.start_soon(self._watch_cancellations)
        self.summary = ProviderSummary(self.provider, self.runs, work_pool_name(self))
        group.start_soon(self.summary.loop, self.client, self._stop)

    async def teardown(self, *exc_info: Any) -> None:
        self._stop.set()
        self._wake.set()
        if self.provider is not None:
            for task in list(self.runs.inflight if self.runs else ()):
                self.provider.cancel(task, "the worker stopped")
            await anyio.to_thread.run_sync(self.provider.close)
        if self.journal is not None:
            self.journal.finish()  # sessions close once their tasks are recorded
            with anyio.move_on_after(15):  # what ended gets recorded
                while self.runs is not None and self.runs.inflight:
                    await anyio.sleep(0.05)
                while self.journal.pending():
                    try:
                        await self.journal.flush()
                    except Exception as e:
                        self.log.warning("could not record %d task(s) in Prefect: %s", self.journal.pending(), e)
                        break
        # What is not sent by then stays spooled on disk: the next worker sends it.
        await anyio.to_thread.run_sync(events.sender().flush, 10.0)
        await anyio.to_thread.run_sync(api_writer.writer("/logs/").flush, 5.0)
        if self.summary is not None:
            try:
                await self.summary.write(self.client, force=True)
            except Exception as e:
                self.log.warning("could not write the provider's summary: %s", e)
        if self._key_lease is not None:  # last: nothing of ours runs with the key now
            await anyio.to_thread.run_sync(self._key_lease.__exit__, None, None, None)
        await super().teardown(*exc_info)

    async def _start_provider(self, config: ProviderJobConfiguration) -> None:
        from ..plugin_manager import PluginKind, create

        # Blocks the pool references, or names (older pools; the per-machine wallet setting). One
        # not set stops `prefect worker start` with one line naming it (JobVariableError).
        wallet, network, storage = await anyio.to_thread.run_sync(config.blocks)
        acting_for = config.acting_for(wallet.address)  # an agent pool's provider, or None: the wallet's own
        me = acting_for or wallet.address
        self._policy = create(PluginKind.TASK_POLICY, config.task_policy, **config.task_policy_options)
        owner = owner_tag(me, network.chain_id, str(self.client.api_url))  # reap only its own (backends.py)
        backend = create(PluginKind.HARDWARE_BACKEND, config.backend, owner=owner, **config.backend_options)
        environment = Environment[config.environment.upper()]

        def route(source: str, line: str) -> None:
            if self.runs is not None:
                self.runs.route_log(source, line)
            else:
                self.log.info("[%s] %s", source[:10], line)

        def start() -> Provider:
            # This worker alone signs with the key: a live one elsewhere must keep its services.
            self._key_lease = KeyGuard(
                network.chain_id, wallet.address, worker=self.name, pool=work_pool_name(self), logger=self.log
            ).__enter__()
            reaped = backend.reap()
            if reaped:
                self.log.warning("stopped %d service(s) left running by an earlier worker", reaped)
            provider = Provider(
                network.connect(),
                wallet.signer(),
                storage.store(),
                backend,
                environment,
                service_log=route,
                on_service=lambda change, source: self._service_changed(change, network.chain_id, me, source),
                provider=acting_for,
                config_origins=config.config_origins or None,
            )
            try:
                stand(provider, config, self.log)  # stake, registrations, leave_sources, hardware
            except BaseException:
                provider.close()  # its callback server, work folder and threads
                raise
            return provider

        try:
            self.provider = await anyio.to_thread.run_sync(start)
        except InvalidInputError as e:  # an agent's standing (authority, stake): one line, no traceback
            raise JobVariableError(e.field, str(e).partition(": ")[2]) from None
        flow_id, self._deployment_id = await ensure_deployment(
            self.client, work_pool_name(self), self._queue_name, self.provider.address
        )
        add_work_queue(self, self._queue_name)
        self.journal = open_journal(
            config.records,
            self.client,
            self._deployment_id,
            flow_id,
            work_pool_name(self),
            self._queue_name,
            self.provider,
            self.get_flow_run_logger,
            self.log,
        )
        self.log.info(
            "provider %s serves %d source(s) on %s with the %s backend%s",
            self.provider.address,
            len(config.sources),
            config.environment,
            config.backend,
            f", signed by {self.provider.agent} for it" if self.provider.agent else "",
        )

    def _service_changed(self, change: str, chain_id: int, provider: str, source: str) -> None:
        """A source's service started or stopped (any thread): an event; a stop closes its session."""
        emit_service_event(change, chain_id, provider, source, self._related_resources())
        if change == "stopped" and self.journal is not None:
            self.journal.service_stopped(source)

    @property
    def _queue_name(self) -> str:
        assert self.provider is not None
        return f"provider-{self.provider.address.lower()}"

    async def _resume_open_runs(self) -> None:
        assert self.provider is not None and self.journal is not None and self.runs is not None
        assert self._deployment_id is not None
        self._resumed = await resume_left_open(
            self.client, self._deployment_id, self.provider, self.journal, self.runs, self.log
        )

    async def _warm_services(self) -> None:
        """Starts each source's service now: the first task then finds it warm (in a
        FIRST_RESPONSE race, a cold start loses). A source that fails here is retried by its first task."""
        assert self.provider is not None and self.config is not None
        provider = self.provider
        for source in self.config.sources:
            try:
                await anyio.to_thread.run_sync(provider.service_for, source)
            except Exception as e:
                self.log.warning("could not warm the service of source %s: %s", source, e)

    # ---- the chain watcher ----

    async def _watch_chain(self) -> None:
        assert self.provider is not None and self.config is not None and self.runs is not None
        provider, config, runs = self.provider, self.config, self.runs
        head = await anyio.to_thread.run_sync(provider.chain.block_number)
        watcher = ChainWatcher(provider.chain, provider.address, config.sources, max(head - config.lookback_blocks, 0))
        checked = time.monotonic()
        while not self._stop.is_set():
            try:
                polled, now = await anyio.to_thread.run_sync(
                    lambda: watcher.poll(busy=runs.busy, skip_resume=self._resumed)
                )
                provider.clock.set(now)
                for r in polled.resume:
                    if runs.start(r.task, r.source, r.payment, publication=watcher.publication(r.task), resumed=True):
                        runs.event("resumed", r.task, r.source, {"note": "attempted before a worker restart"})
                await self._take(watcher)
                if runs.inflight and time.monotonic() - checked > TAKEN_CHECK_S:
                    checked = time.monotonic()
                    running = list(runs.inflight)
                    for t in await anyio.to_thread.run_sync(provider.give_up_taken, running):
                        self.log.info("task %s closed without our response: stopped waiting for it", t)
            except Exception:  # the chain hiccuped: keep watching
                self.log.exception("chain watch failed; retrying")
                await anyio.sleep(1.0)
            with anyio.move_on_after(config.poll_interval_s):
                await self._wake.wait()
            self._wake = anyio.Event()
            await anyio.to_thread.run_sync(lambda: provider.reap_idle(config.idle_timeout_s))

    async def _take(self, watcher: ChainWatcher) -> None:
        """Attempts the offers the policy takes, within free capacity (pipelined), and runs them."""
        assert self.provider is not None and self.config is not None and self.runs is not None
        provider, runs = self.provider, self.runs
        if self._key_lease is not None and not await anyio.to_thread.run_sync(self._key_lease.may_take_tasks):
            return
        if provider.agent is not None:  # a revoked agent attempts nothing (re-read every 10 s)
            was, self._refused = self._refused, await anyio.to_thread.run_sync(provider.authority_problem)
            if self._refused is not None:
                if self._refused != was:  # one line per change, not a traceback
                    self.log.error("not taking tasks: %s", self._refused)
                return
        chosen = watcher.take(self.config.max_concurrent_tasks - len(runs.inflight), provider.clock.now(), self._policy)
        if not chosen:
            return
        for offer, _ in chosen:  # hold the slots while the attempts are mined
            runs.inflight[offer.task] = offer.source
        try:
            attempted = set(
                await anyio.to_thread.run_sync(
                    lambda: provider.attempt([o.task for o, _ in chosen], [p for _, p in chosen])
                )
            )
        finally:
            for offer, _ in chosen:
                runs.inflight.pop(offer.task, None)
        for offer, price in chosen:
            if offer.task in attempted:
                runs.start(offer.task, offer.source, price, publication=watcher.publication(offer.task))
            else:
                watcher.forget(offer.task)

    # ---- flow runs started from Prefect ----

    async def run(
        self,
        flow_run: FlowRun,
        configuration: ProviderJobConfiguration,
        task_status: anyio.abc.TaskStatus[str] | None = None,
    ) -> ProviderWorkerResult:
        """A flow run of the deployment started from the UI or the API (its task must be one this
        provider attempted): executed like any other, recorded on that flow run."""
        assert self.provider is not None and self.runs is not None and self.journal is not None
        if "task" not in flow_run.parameters:  # a session's run (a Retry of it): nothing names a task
            if task_status is not None:
                task_status.started(f"{self.provider.address}:session")
            await self.journal.close_runs(
                [flow_run.id], "CANCELLED", "a session's run is not executed again: start a run with a task's address"
            )
            return ProviderWorkerResult(identifier=f"{self.provider.address}:session", status_code=0)
        task, source = flow_run.parameters["task"], flow_run.parameters["source"]
        identifier = f"{self.provider.address}:{task}"
        if task_status is not None:
            task_status.started(identifier)
        self.runs.start(
            task,
            source,
            int(flow_run.parameters.get("payment") or 0),
            run_id=flow_run.id,
            note="started from Prefect (a Retry or a new run): the task is executed again, unless "
            "its response is already on chain",
        )
        while self.runs.busy(task):
            await anyio.sleep(0.2)
        return ProviderWorkerResult(identifier=identifier, status_code=0)

    def owns_run(self, flow_run: FlowRun) -> bool:
        """Only our own deployment's runs are submitted: a pool may hold several providers' queues."""
        return flow_run.deployment_id == self._deployment_id

    # ---- cancellation ----

    async def _watch_cancellations(self) -> None:
        """Prefect cancellation of a running task's flow run stops its wait."""
        from prefect.client.schemas.filters import (
            FlowRunFilter,
            FlowRunFilterId,
            FlowRunFilterState,
            FlowRunFilterStateType,
        )

        while not self._stop.is_set():
            with anyio.move_on_after(2.0):
                await self._stop.wait()
            open_runs = self.journal.open_runs() if self.journal is not None else {}
            if not open_runs or self._stop.is_set():
                continue
            try:
                runs = await self.client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(
                        id=FlowRunFilterId(any_=list(open_runs)),
                        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.CANCELLING])),
                    )
                )
            except Exception:
                self.log.debug("cancellation poll failed", exc_info=True)
                continue
            for run in runs:
                self.journal.cancelled(run.id)  # type: ignore[union-attr]
                for task in open_runs[run.id]:
                    await self.kill_infrastructure(f"{self.provider.address}:{task}", self.config)  # type: ignore[union-attr,arg-type]

    async def kill_infrastructure(
        self, infrastructure_pid: str, configuration: ProviderJobConfiguration, grace_seconds: int = 30
    ) -> None:
        """Stops the task named by `infrastructure_pid` (`provider:task`): its wait ends (its flow
        run is Cancelled). Its source's warm service is stopped only when no other task uses it."""
        from prefect.exceptions import InfrastructureNotAvailable

        if self.provider is None or self.runs is None:
            raise InfrastructureNotAvailable("the provider is not running in this worker")
        owner, _, task = infrastructure_pid.partition(":")
        if owner.lower() != self.provider.address.lower():
            raise InfrastructureNotAvailable(f"{infrastructure_pid} belongs to another provider")
        provider, runs = self.provider, self.runs
        source = runs.inflight.get(task)
        provider.cancel(task)
        if source is not None and not [t for t in runs.running_of(source) if t != task]:
            await anyio.to_thread.run_sync(lambda: provider.stop_service(source))
