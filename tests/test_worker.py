"""The `ogpu-provider` worker, started as real `prefect worker start` processes against Prefect's
test harness server and the devnet, running the echo source (official ogpu.service API) with the
`local` backend over real HTTP. Tasks are published by the client; each taken task must become a
COMPLETED flow run with the service's output in its logs, and earnings must grow by exactly the
payments. Nothing is mocked."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ogpu_prefect.backends import owner_tag
from ogpu_prefect.blocks import OGPUNetwork, OGPUStorage, OGPUWallet
from ogpu_prefect.chain.connection import Chain
from ogpu_prefect.chain.devnet import CHAIN_ID
from ogpu_prefect.chain.types import DeliveryMethod, TaskStatus
from ogpu_prefect.client import OGPUClient
from ogpu_prefect.models import SourceSpec, TaskInput
from ogpu_prefect.plugins.local_backend import OWNER_VAR, LocalBackend, _processes_with
from ogpu_prefect.storage import LocalStore, fetch_json
from ogpu_prefect.worker.configuration import with_defaults
from ogpu_prefect.worker.worker import OGPUProviderWorker, worker_command

pytestmark = pytest.mark.usefixtures("prefect_harness")
ECHO = Path(__file__).resolve().parents[1] / "flows" / "sources" / "echo" / "docker-compose.cpu.yml"
PAY = 10**16


class Fleet:
    """A work pool of type ogpu-provider, its blocks, and worker processes."""

    def __init__(self, devnet: Any, store: LocalStore, tmp: Path, name: str) -> None:
        self.devnet, self.store, self.tmp, self.name = devnet, store, tmp, name
        self.chain = Chain(devnet.network)
        self.client = OGPUClient(self.chain, devnet.key("client"), store)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.network = OGPUNetwork.from_network(devnet.network)
        self.network.save(f"{name}-net", overwrite=True)
        self.storage = OGPUStorage(write_url=f"file://{store.root}", read_url=store.base_url)
        self.storage.save(f"{name}-store", overwrite=True)

    def publish_source(self, method: DeliveryMethod = DeliveryMethod.FIRST_RESPONSE) -> str:
        return self.client.publish_source(
            SourceSpec(
                name="echo",
                cpu=f"file://{ECHO}",
                min_payment=10**15,
                min_available_lockup=10**18,
                max_expiry_duration=3600,
                delivery_method=method,
            )
        )

    def wallet(self, role: str) -> OGPUWallet:
        """`role`'s key, saved as the wallet block `<fleet>-<role>`."""
        wallet = OGPUWallet(private_key=self.devnet.key(role))
        wallet.save(f"{self.name}-{role}", overwrite=True)
        return wallet

    def create_pool(self, pool: str, sources: list[str], wallet_block: str, **variables: Any) -> None:
        """A pool whose job variables reference the fleet's network and storage blocks and the
        wallet block `wallet_block` (`<fleet>-<role>`), as the pool's block pickers in the UI do."""
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.actions import WorkPoolCreate

        # The tests written for a flow run per task keep that representation unless they name one.
        variables.setdefault("records", "flow_runs")
        template = with_defaults(
            OGPUProviderWorker.get_default_base_job_template(),
            network=self.network,
            storage=self.storage,
            wallet=self.wallet(wallet_block.removeprefix(f"{self.name}-")),
            sources=sources,
            poll_interval_s=0.1,
            **variables,
        )
        with get_client(sync_client=True) as c:
            c.create_work_pool(
                WorkPoolCreate(name=pool, type="ogpu-provider", base_job_template=template), overwrite=True
            )

    def start_worker(self, pool: str, role: str) -> subprocess.Popen[bytes]:
        """`prefect worker start` on `pool`, with `role`'s key saved as the wallet block
        `<fleet>-<role>` (which the pool's `wallet` references)."""
        from prefect.settings import PREFECT_API_URL

        self.wallet(role)
        env = {
            **os.environ,
            "PREFECT_API_URL": PREFECT_API_URL.value(),
            "PREFECT_WORKER_QUERY_SECONDS": "2",
            "PREFECT_HOME": str(self.tmp / f"home-{role}"),
        }
        log = open(self.tmp / f"worker-{role}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            worker_command(pool, f"{self.name}-{role}"),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs[role] = proc
        return proc

    def wait_registered(self, source: str, role: str, timeout: float = 90, address: str | None = None) -> None:
        """Until `role`'s worker registered `address` (default: `role`'s own) to `source`."""
        address = address or self.devnet.address(role)
        deadline = time.time() + timeout
        while self.chain.source(source).get_registrant_id(address) == 0:
            proc = self.procs[role]
            assert proc.poll() is None, self.worker_log(role)
            assert time.time() < deadline, self.worker_log(role)
            time.sleep(0.2)
        time.sleep(1.0)  # the watcher starts right after the registration

    def worker_log(self, role: str) -> str:
        return (self.tmp / f"worker-{role}.log").read_text(errors="replace")[-6000:]

    def stop(self, role: str, sig: int = signal.SIGINT) -> None:
        proc = self.procs.pop(role)
        if proc.poll() is None:
            os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def publish(self, source: str, inputs: list[dict[str, Any]], function: str = "echo", ttl: int = 120) -> list[Any]:
        return self.client.publish_tasks(
            source, [TaskInput(function_name=function, data=d) for d in inputs], PAY, self.chain.now() + ttl
        )

    def wait_final(self, tasks: list[str], timeout: float = 90) -> None:
        deadline = time.time() + timeout
        while True:
            states = self.chain.read_many([self.chain.task(t).read.get_status() for t in tasks])
            if all(s is TaskStatus.FINALIZED for s in states):
                return
            assert time.time() < deadline, (states, {r: self.worker_log(r) for r in self.procs})
            time.sleep(0.3)


def flow_runs_of(pool: str) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import WorkPoolFilter, WorkPoolFilterName

    with get_client(sync_client=True) as c:
        return c.read_flow_runs(work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[pool])))


def logs_of(flow_run_ids: list[Any]) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with get_client(sync_client=True) as c:
        logs = c.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=flow_run_ids)))
    return [entry.message for entry in logs]


def provider_events(provider: str, since: float, prefix: str = "ogpu.provider.task.") -> list[str]:
    """Names of the events named `prefix...` about `provider` that the Prefect server stored, of
    those that occurred after `since` (a wall-clock time)."""
    from ogpu_prefect.events import resource, stored_events

    provider_id = resource(CHAIN_ID, "provider", provider)["prefect.resource.id"]
    return [e.event for e in stored_events(prefix, since, provider_id)]


def responses_since(chain: Any, from_block: int) -> list[tuple[str, str]]:
    """(task, provider) of every ResponseSubmitted since `from_block`."""
    events = chain.cursor(["ResponseSubmitted"], from_block).poll()
    params = chain.read_many([chain.response(e["response"]).read.get_response_params() for e in events])
    return [(p.task.lower(), p.provider.lower()) for p in params]


def service_owner(provider: str, chain_id: int = CHAIN_ID) -> str:
    """The owner a worker of `provider` on this session's devnet and Prefect server gives its
    services (another test session's workers, with the same keys, have their own)."""
    from prefect.settings import PREFECT_API_URL

    return owner_tag(provider, chain_id, PREFECT_API_URL.value() or "")


def reap(provider: str, chain_id: int = CHAIN_ID) -> None:
    """Stops the services a killed worker of `provider` left (this session's only)."""
    LocalBackend(service_owner(provider, chain_id)).reap()


def service_processes(*providers: str) -> list[int]:
    wanted = {service_owner(p) for p in providers}
    return [pid for pid, owner in _processes_with(OWNER_VAR) if owner in wanted]


@pytest.fixture
def fleet(devnet, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Fleet]:
    with LocalStore(tmp_path / "payloads") as store:
        f = Fleet(devnet, store, tmp_path, request.node.name.replace("_", "-")[:40])
        try:
            yield f
        finally:
            for role in list(f.procs):
                f.stop(role, signal.SIGKILL)
                reap(devnet.address(role))  # what the killed worker's services left


def test_a_worker_runs_tasks_as_completed_flow_runs_and_earns_exactly_the_payments(fleet: Fleet) -> None:
    began = time.time()
    source = fleet.publish_source()
    fleet.create_pool("gpus-one", [source], wallet_block=f"{fleet.name}-provider1")
    fleet.start_worker("gpus-one", "provider1")
    fleet.wait_registered(source, "provider1")
    provider = fleet.devnet.address("provider1")
    earned0 = fleet.chain.vault.total_earnings_of(provider)
    published = fleet.publish(source, [{"text": f"hello {i}"} for i in range(6)])
    tasks = [p.address for p in published]
    fleet.wait_final(tasks)
    assert fleet.chain.vault.total_earnings_of(provider) - earned0 == 6 * PAY
    winners = fleet.chain.read_many([fleet.chain.task(t).read.winning_provider() for t in tasks])
    assert {w.lower() for w in winners} == {provider.lower()}

    deadline = time.time() + 30
    while True:  # the journal records the Completed state shortly after the receipt
        runs = flow_runs_of("gpus-one")
        if len(runs) == 6 and all(r.state_type.value == "COMPLETED" for r in runs) or time.time() > deadline:
            break
        time.sleep(0.3)
    assert sorted(r.parameters["task"] for r in runs) == sorted(tasks)
    assert all(r.state_type.value == "COMPLETED" for r in runs), [(r.name, r.state_type) for r in runs]
    wanted_tags = {"ogpu-provider", f"provider:{provider}".lower(), f"source:{source}".lower()}
    assert all(wanted_tags <= {t.lower() for t in r.tags} for r in runs), "runs filterable by provider and source"
    deadline = time.time() + 30
    while True:  # logs reach the API in batches (every 2 s by default)
        messages = logs_of([r.id for r in runs])
        if (
            any("[service] echo: 1 field(s)" in m for m in messages)
            and any("response 0x" in m for m in messages)
            or time.time() > deadline
        ):
            break
        time.sleep(0.5)
    assert any("[service] echo: 1 field(s)" in m for m in messages), "service output reaches the flow-run logs"
    assert any("response 0x" in m for m in messages)

    fleet.stop("provider1")  # a clean stop leaves no service process behind
    assert service_processes(provider) == []
    deadline = time.time() + 30
    while (
        "ogpu.provider.service.stopped" not in provider_events(provider, began, "ogpu.provider.service.")
        and time.time() < deadline
    ):
        time.sleep(0.5)
    assert sorted(provider_events(provider, began, "ogpu.provider.service.")) == [
        "ogpu.provider.service.started",
        "ogpu.provider.service.stopped",
    ], "the clean stop sends what it emitted"


def test_two_workers_race_a_batch_and_every_task_is_finalized_once(fleet: Fleet) -> None:
    source = fleet.publish_source()
    fleet.create_pool("gpus-two", [source], wallet_block=f"{fleet.name}-provider1")
    # Two provider accounts, each a pool (the pool's variables name its wallet), serving one source.
    fleet.create_pool("gpus-two-b", [source], wallet_block=f"{fleet.name}-provider2")
    fleet.start_worker("gpus-two", "provider1")
    fleet.start_worker("gpus-two-b", "provider2")
    fleet.wait_registered(source, "provider1")
    fleet.wait_registered(source, "provider2")
    p1, p2 = fleet.devnet.address("provider1"), fleet.devnet.address("provider2")
    deadline = time.time() + 90  # both serving: a worker starts its chain watcher with its warm-up
    while not (service_processes(p1) and service_processes(p2)):
        assert time.time() < deadline, (fleet.worker_log("provider1"), fleet.worker_log("provider2"))
        time.sleep(0.2)
    time.sleep(1.0)
    earned0 = {p: fleet.chain.vault.total_earnings_of(p) for p in (p1, p2)}
    start = fleet.chain.block_number() + 1
    # Tasks that take a moment: one worker's 8 slots cannot take the whole batch at once.
    tasks = [p.address for p in fleet.publish(source, [{"seconds": 0.5} for _ in range(30)], function="sleep")]
    fleet.wait_final(tasks)
    pairs = responses_since(fleet.chain, start)
    assert len(set(pairs)) == len(pairs), "no task answered twice by the same provider"
    assert sorted(t for t, _ in pairs) == sorted(t.lower() for t in tasks), "every task answered once (FIRST_RESPONSE)"
    winners = [fleet.chain.task(t).winning_provider().lower() for t in tasks]
    assert set(winners) <= {p1.lower(), p2.lower()}
    # FIRST_RESPONSE is a race: both take part, the faster answer wins each task (maybe all of them).
    attempted = fleet.chain.read_many([fleet.chain.task(t).read.attempter_id(p) for t in tasks for p in (p1, p2)])
    assert any(attempted[0::2]) and any(attempted[1::2]), "both workers attempt tasks of the batch"
    gained = sum(fleet.chain.vault.total_earnings_of(p) - earned0[p] for p in (p1, p2))
    assert gained == len(tasks) * PAY


def test_sigkill_mid_task_then_restart_never_submits_twice_and_leaves_nothing_running(fleet: Fleet) -> None:
    began = time.time()
    source = fleet.publish_source()
    fleet.create_pool("gpus-kill", [source], wallet_block=f"{fleet.name}-provider3")
    fleet.start_worker("gpus-kill", "provider3")
    fleet.wait_registered(source, "provider3")
    provider = fleet.devnet.address("provider3")
    start = fleet.chain.block_number() + 1
    task = fleet.publish(source, [{"seconds": 4}], function="sleep", ttl=90)[0].address
    deadline = time.time() + 60
    while fleet.chain.task(task).get_attempter_id(provider) == 0 or not service_processes(provider):
        assert time.time() < deadline, fleet.worker_log("provider3")
        time.sleep(0.1)
    time.sleep(1.0)  # the service is inside the task's handler
    fleet.stop("provider3", signal.SIGKILL)
    assert fleet.chain.task(task).get_status() is TaskStatus.ATTEMPTED, "killed before answering"

    fleet.start_worker("gpus-kill", "provider3")
    fleet.wait_final([task], timeout=90)
    assert responses_since(fleet.chain, start) == [(task.lower(), provider.lower())], "answered exactly once"
    assert fleet.chain.task(task).winning_provider().lower() == provider.lower()
    runs = flow_runs_of("gpus-kill")
    assert len(runs) == 1, "one flow run per task, across the restart"
    deadline = time.time() + 20
    while flow_runs_of("gpus-kill")[0].state_type.value != "COMPLETED" and time.time() < deadline:
        time.sleep(0.3)
    assert flow_runs_of("gpus-kill")[0].state_type.value == "COMPLETED"
    deadline = time.time() + 30
    while "ogpu.provider.task.responded" not in provider_events(provider, began) and time.time() < deadline:
        time.sleep(0.5)  # events reach the server's store through its own pipeline
    names = provider_events(provider, began)
    # (`attempted` came from the killed worker: it may have died before sending it.)
    assert names.count("ogpu.provider.task.resumed") == 1 and names.count("ogpu.provider.task.responded") == 1, names
    fleet.stop("provider3")
    assert service_processes(provider) == [], "no service process outlives the workers"


def test_a_restart_on_a_reverted_chain_closes_the_lost_tasks_runs_and_records_the_new_ones(fleet: Fleet) -> None:
    """The devnet's snapshots (and a reorg on a real chain) take tasks away, and their addresses
    come back as new tasks: the flow runs a killed worker left open for the lost ones must be
    closed, not resumed, and never stand in for the new tasks' runs."""
    source = fleet.publish_source()
    fleet.create_pool("gpus-revert", [source], wallet_block=f"{fleet.name}-provider3")
    before = fleet.devnet.snapshot()
    fleet.start_worker("gpus-revert", "provider3")
    fleet.wait_registered(source, "provider3")
    lost = [p.address for p in fleet.publish(source, [{"seconds": 60}] * 2, function="sleep", ttl=300)]
    deadline = time.time() + 60
    while len([r for r in flow_runs_of("gpus-revert") if r.state_type.value == "RUNNING"]) < 2:
        assert time.time() < deadline, fleet.worker_log("provider3")
        time.sleep(0.2)
    fleet.stop("provider3", signal.SIGKILL)
    reap(fleet.devnet.address("provider3"))
    fleet.devnet.revert(before)  # the two tasks are gone; their flow runs are left Running

    fleet.start_worker("gpus-revert", "provider3")
    fleet.wait_registered(source, "provider3")
    fleet.client = OGPUClient(fleet.chain, fleet.devnet.key("client"), fleet.store)  # the revert rewound its nonce
    tasks = [p.address for p in fleet.publish(source, [{"text": "again 0"}, {"text": "again 1"}])]
    assert tasks == lost, "the premise: the new tasks take the lost ones' addresses"
    fleet.wait_final(tasks)
    deadline = time.time() + 30
    while True:
        runs = flow_runs_of("gpus-revert")
        states = sorted(r.state_type.value for r in runs)
        if states == ["CANCELLED", "CANCELLED", "COMPLETED", "COMPLETED"] or time.time() > deadline:
            break
        time.sleep(0.3)
    assert states == ["CANCELLED", "CANCELLED", "COMPLETED", "COMPLETED"], (
        [(r.name, r.state_type, r.state.message if r.state else "") for r in runs],
        fleet.worker_log("provider3"),
    )
    assert all("not on this chain" in r.state.message for r in runs if r.state_type.value == "CANCELLED")
    assert "failed unexpectedly" not in fleet.worker_log("provider3")


def test_a_task_another_provider_wins_frees_its_slot_without_waiting_for_the_service(fleet: Fleet) -> None:
    """While our service still works on a task, another provider answers it first (FIRST_RESPONSE
    finalizes it): the worker stops waiting, its flow run is Cancelled with the reason, and its
    slot takes the next task, long before the service would have answered."""
    from ogpu_prefect.chain.structs import ResponseParams
    from ogpu_prefect.chain.types import Environment

    source = fleet.publish_source()
    fleet.create_pool("gpus-lose", [source], wallet_block=f"{fleet.name}-provider1", max_concurrent_tasks=1)
    fleet.start_worker("gpus-lose", "provider1")
    fleet.wait_registered(source, "provider1")
    me = fleet.devnet.address("provider1")
    rival = fleet.chain.sender(fleet.devnet.key("provider2"))
    rival.transact(fleet.chain.nexus.register(source, rival.address, int(Environment.CPU)))
    slow = fleet.publish(source, [{"seconds": 600}], function="sleep", ttl=900)[0].address
    deadline = time.time() + 60
    while fleet.chain.task(slow).get_attempter_id(me) == 0:
        assert time.time() < deadline, fleet.worker_log("provider1")
        time.sleep(0.1)
    rival.transact(fleet.chain.nexus.attempt(slow, rival.address, PAY))
    rival.transact(fleet.chain.nexus.submit_response(ResponseParams(slow, rival.address, "https://rival/r", PAY)))
    assert fleet.chain.task(slow).get_status() is TaskStatus.FINALIZED

    after = fleet.publish(source, [{"text": "next"}])[0].address  # needs the one slot
    fleet.wait_final([after], timeout=120)
    assert fleet.chain.task(after).winning_provider().lower() == me.lower()
    deadline = time.time() + 30
    while True:
        runs = {r.parameters["task"]: r for r in flow_runs_of("gpus-lose")}
        if slow in runs and runs[slow].state_type.value == "CANCELLED" or time.time() > deadline:
            break
        time.sleep(0.3)
    assert runs[slow].state_type.value == "CANCELLED", (runs[slow].state, fleet.worker_log("provider1"))
    assert runs[slow].state.message == "finalized by another provider"
    assert fleet.chain.task(slow).response_of(me) == "0x" + "0" * 40, "no response after the task was won"


@pytest.fixture(scope="module")
def docker_engine() -> Iterator[None]:
    from .docker_engine import ensure_engine, stop_engine

    reason = ensure_engine(Path(__file__).resolve().parents[1] / ".ogpu" / "docker")
    if reason:
        stop_engine()
        pytest.skip(f"docker backend: {reason}")
    # The image build needs apt and pip to reach the package registries from inside the build:
    # where they cannot, nothing here can run a container, and the skip says so.
    build = subprocess.run(
        ["docker", "build", "-q", "-t", "ogpu-prefect/echo:0.1", str(ECHO.parent)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if build.returncode != 0:
        stop_engine()
        pytest.skip(f"docker backend: the echo image cannot be built here: {build.stderr[-400:]}")
    yield
    stop_engine()


def test_the_docker_backend_builds_and_runs_the_source_image(fleet: Fleet, docker_engine: None) -> None:
    from ogpu_prefect.plugins.docker_backend import OWNER_LABEL

    source = fleet.publish_source()
    fleet.create_pool("gpus-docker", [source], wallet_block=f"{fleet.name}-provider2", backend="docker")
    fleet.start_worker("gpus-docker", "provider2")
    fleet.wait_registered(source, "provider2")
    provider = fleet.devnet.address("provider2")
    earned0 = fleet.chain.vault.total_earnings_of(provider)
    tasks = [p.address for p in fleet.publish(source, [{"text": f"box {i}"} for i in range(3)], ttl=900)]
    fleet.wait_final(tasks, timeout=600)  # the first task builds the image
    assert fleet.chain.vault.total_earnings_of(provider) - earned0 == 3 * PAY
    results = [
        fetch_json(fleet.chain.response(fleet.chain.task(t).response_of(provider)).response_params()[2]) for t in tasks
    ]
    assert sorted(r["result"]["upper"] for r in results) == ["BOX 0", "BOX 1", "BOX 2"]
    deadline = time.time() + 30
    while not all(r.state_type.value == "COMPLETED" for r in flow_runs_of("gpus-docker")) and time.time() < deadline:
        time.sleep(0.3)
    runs = flow_runs_of("gpus-docker")
    assert len(runs) == 3 and all(r.state_type.value == "COMPLETED" for r in runs)
    deadline = time.time() + 30
    while not any("[service] echo: 1 field(s)" in m for m in logs_of([r.id for r in runs])) and time.time() < deadline:
        time.sleep(0.5)  # logs reach the API in batches
    assert any("[service] echo: 1 field(s)" in m for m in logs_of([r.id for r in runs])), "container output in logs"
    fleet.stop("provider2")
    left = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label={OWNER_LABEL}={service_owner(provider)}"],
        capture_output=True,
        text=True,
    ).stdout.split()
    assert left == [], "no container outlives the worker"


def test_a_second_worker_with_a_live_workers_key_refuses_to_start_and_leaves_its_services(fleet: Fleet) -> None:
    """Before: the second worker logged "stopped 1 service(s) left running by an earlier worker" and
    killed the live worker's service. Now it refuses to start, naming the worker that holds the key."""
    source = fleet.publish_source()
    fleet.create_pool("one-key", [source], wallet_block=f"{fleet.name}-provider1")
    first = fleet.start_worker("one-key", "provider1")
    fleet.wait_registered(source, "provider1")
    provider = fleet.devnet.address("provider1")
    fleet.wait_final([p.address for p in fleet.publish(source, [{"text": "warm"}])])
    services = service_processes(provider)
    assert services, "the first worker's service runs"

    from prefect.settings import PREFECT_API_URL

    log_path = fleet.tmp / "worker-second.log"
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PREFECT_HOME": str(fleet.tmp / "home-second")}
    with open(log_path, "ab") as log:
        second = subprocess.Popen(
            worker_command("one-key", f"{fleet.name}-second"),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        code = second.wait(timeout=180)
    finally:
        if second.poll() is None:
            os.killpg(second.pid, signal.SIGKILL)
    out = log_path.read_text(errors="replace")
    assert code != 0, out[-3000:]
    assert f"{fleet.name}-provider1" in out and "in use by worker" in out, out[-3000:]
    assert "left running by an earlier worker" not in out, out[-3000:]
    assert first.poll() is None, fleet.worker_log("provider1")
    assert set(services) <= set(service_processes(provider)), "the live worker's service was left alone"
    fleet.wait_final([p.address for p in fleet.publish(source, [{"text": "still served"}])])


def test_a_worker_whose_key_slot_is_lost_takes_no_task_until_the_slot_is_its_own_again(fleet: Fleet) -> None:
    """The server takes a worker's key slot back (renewals failed past the lease, or an operator
    freed it) and another holder takes it. Before: the worker only logged the loss and went on
    taking tasks beside the new holder. Now it takes none while the slot is another's, and takes
    the slot again (then tasks) once it is free."""
    from prefect.client.orchestration import get_client
    from prefect.variables import Variable

    from ogpu_prefect.worker.key_lease import ProviderKeyLease

    source = fleet.publish_source()
    fleet.create_pool("lost-key", [source], wallet_block=f"{fleet.name}-provider1")
    fleet.start_worker("lost-key", "provider1")
    fleet.wait_registered(source, "provider1")
    provider = fleet.devnet.address("provider1")
    fleet.wait_final([p.address for p in fleet.publish(source, [{"text": "warm"}])])

    slot = ProviderKeyLease(fleet.chain.network.chain_id, provider, worker="other", pool="elsewhere")
    held = Variable.get(slot.holder_variable)
    with get_client(sync_client=True) as c:  # what the server does to a lease that ran out
        c.release_concurrency_slots_with_lease(held["lease_id"])
    slot.__enter__()  # another worker's now
    try:
        deadline = time.time() + 60
        while "slot was taken back" not in fleet.worker_log("provider1"):  # at its next renewal
            assert time.time() < deadline, fleet.worker_log("provider1")
            time.sleep(0.5)
        (task,) = [p.address for p in fleet.publish(source, [{"text": "while another holds the key"}])]
        time.sleep(5)  # dozens of the worker's polls (every 0.1 s)
        assert TaskStatus(fleet.chain.task(task).get_status()) is TaskStatus.NEW, fleet.worker_log("provider1")
        assert "not taking tasks: wallet: the key of" in fleet.worker_log("provider1")
    finally:
        slot.__exit__(None, None, None)
    fleet.wait_final([task], timeout=60)
    assert "slot again: taking tasks" in fleet.worker_log("provider1")
    assert fleet.chain.task(task).winning_provider().lower() == provider.lower()
