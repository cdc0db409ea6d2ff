"""The 1 s-block tier (`-m blocktime`): the main paths on a devnet that mines a block every second
under a 30M gas limit, as a real chain does, every process behind a metered endpoint
(tests/rpcproxy.py: a round trip, a calls/s limit counting each call in a batch). Transactions
stay pending until the next block here, where the automine devnet mined each at once. A few tasks
each: the tier runs with the suite."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ogpu_prefect.chain import devnet as devnet_mod
from ogpu_prefect.chain.connection import Chain
from ogpu_prefect.chain.devnet import Devnet
from ogpu_prefect.chain.types import DeliveryMethod
from ogpu_prefect.models import SourceSpec

from .provider_sim import SimProvider
from .rpcproxy import RpcProxy

pytestmark = [pytest.mark.blocktime, pytest.mark.usefixtures("prefect_harness")]


@pytest.fixture(scope="module")
def chain_1s() -> Iterator[Devnet]:
    net = devnet_mod.start(block_time=1, gas_limit=30_000_000)
    yield net
    net.stop()


def _batch_through(net: Devnet, proxy: RpcProxy, tmp_path: Path, rates: dict[str, float | None]) -> dict[str, Any]:
    """run_batch of 3 FIRST_RESPONSE tasks, 2 stand-in providers; each role on its own URL."""
    from ogpu_prefect.blocks import OGPUNetwork, OGPUStorage, OGPUWallet
    from ogpu_prefect.client import OGPUClient
    from ogpu_prefect.flows.run_batch import run_batch
    from ogpu_prefect.storage import LocalStore

    def network(role: str) -> Any:
        return dataclasses.replace(net.network, rpc_url=proxy.url_for(role), rate_limit=rates.get(role))

    direct = Chain(net.network)
    with LocalStore(tmp_path / "payloads") as store:
        source = OGPUClient(Chain(network("client")), net.key("client"), store).publish_source(
            SourceSpec(
                name="tier",
                cpu="http://127.0.0.1:9/c.yml",
                min_payment=10**15,
                min_available_lockup=10**18,
                max_expiry_duration=3600,
                delivery_method=DeliveryMethod.FIRST_RESPONSE,
            )
        )
        sims = []
        for i, role in enumerate(("provider1", "provider2")):
            worker = Chain(network(f"worker{i + 1}"))
            s = worker.sender(net.key(role))
            s.transact(worker.nexus.register(source, s.address, 1))
            sims.append(
                SimProvider(
                    network(f"worker{i + 1}"),
                    net.key(role),
                    [source],
                    store,
                    from_block=direct.block_number(),
                    poll_interval=0.25,
                )
            )
        for s in sims:
            s.start()
        frozen0 = direct.vault.frozen_payment(net.address("client"))
        try:
            results = run_batch(
                source,
                [{"i": i} for i in range(3)],
                10**15,
                OGPUNetwork.from_network(network("client")),
                OGPUWallet(private_key=net.key("client")),
                OGPUStorage(write_url=f"file://{store.root.resolve()}", read_url=store.base_url),
                function_name="echo",
                task_timeout=120,
            )
        finally:
            for s in sims:
                s.stop()
        return {
            "results": results,
            "tasks_on_chain": direct.source(source).get_task_count(),
            "frozen_delta": direct.vault.frozen_payment(net.address("client")) - frozen0,
        }


def test_run_batch_first_response_at_a_configured_limit(chain_1s: Devnet, tmp_path: Path) -> None:
    with RpcProxy(chain_1s.rpc_url, delay_s=0.04, limit=30) as proxy:
        out = _batch_through(chain_1s, proxy, tmp_path, {"client": 12, "worker1": 8, "worker2": 8})
        m = proxy.metering
    assert [r.status for r in out["results"]] == ["finalized"] * 3
    assert out["tasks_on_chain"] == 3, "a task published twice"
    assert out["frozen_delta"] == 0, "escrow left frozen"
    assert m.total_rejected() == 0, m.rejected_calls
    assert set(m.calls) == {"client", "worker1", "worker2"}


def test_run_batch_first_response_adapting_to_32005(chain_1s: Devnet, tmp_path: Path) -> None:
    """No configured limit and a strict node (-32005 per call over 25 calls/s): the batch still
    finishes, nothing is doubled or stranded."""
    with RpcProxy(chain_1s.rpc_url, delay_s=0.04, limit=25, mode="32005") as proxy:
        out = _batch_through(chain_1s, proxy, tmp_path, {})
        m = proxy.metering
    assert [r.status for r in out["results"]] == ["finalized"] * 3
    assert out["tasks_on_chain"] == 3 and out["frozen_delta"] == 0
    assert m.total_rejected() <= 0.1 * m.total_calls(), (m.total_rejected(), m.total_calls())


def test_the_workers_provider_serves_tasks_at_a_configured_limit(chain_1s: Devnet, tmp_path: Path) -> None:
    """The worker's Provider (stake, attempt, the echo source run by the local backend over real
    HTTP, submit) and a client, each on its own URL and share of a 10 calls/s endpoint."""
    import time

    from ogpu_prefect.client import OGPUClient
    from ogpu_prefect.models import TaskInput
    from ogpu_prefect.plugin_manager import PluginKind, create
    from ogpu_prefect.plugins.first_response import FirstResponse
    from ogpu_prefect.storage import LocalStore
    from ogpu_prefect.worker.provider import Provider

    from .test_provider import ECHO

    net = chain_1s
    with RpcProxy(net.rpc_url, delay_s=0.04, limit=10) as proxy, LocalStore(tmp_path) as store:

        def chain(role: str, rate: float) -> Chain:
            return Chain(dataclasses.replace(net.network, rpc_url=proxy.url_for(role), rate_limit=rate))

        client = OGPUClient(chain("client", 4.5), net.key("client"), store)
        source = client.publish_source(
            SourceSpec(
                name="echo",
                cpu=f"file://{ECHO}",
                min_payment=10**15,
                min_available_lockup=10**18,
                delivery_method=DeliveryMethod.FIRST_RESPONSE,
            )
        )
        provider = Provider(
            chain("worker", 4.5), net.key("provider3"), store, create(PluginKind.HARDWARE_BACKEND, "local")
        )
        try:
            provider.ensure_standing([source])
            start = client.chain.block_number() + 1
            published = client.publish_tasks(
                source,
                [TaskInput(function_name="echo", data={"text": f"t{i}"}) for i in range(3)],
                10**15,
                client.chain.now() + 300,
            )
            attempted = provider.attempt([p.address for p in published])
            assert attempted == [p.address for p in published]
            for t in attempted:
                provider.execute(t)
            tracked = client.wait_for(published, FirstResponse(), deadline=time.time() + 60, from_block=start)
        finally:
            provider.close()
        m = proxy.metering
    results = [tracked[p.address].outcome.response.payload["result"] for p in published]
    assert [r["upper"] for r in results] == ["T0", "T1", "T2"]
    assert m.total_rejected() == 0, m.rejected_calls
    assert m.total_calls("worker") > 0 and m.total_calls("client") > 0


# ---- the main paths on 1 s blocks (the lease fence: tests/test_lease_fence.py, marked blocktime) ----


@pytest.fixture
def ctx_1s(chain_1s: Devnet, tmp_path: Path) -> Iterator[Any]:
    from ogpu_prefect.storage import LocalStore

    from .scenarios import Ctx

    with LocalStore(tmp_path / "payloads") as store:
        yield Ctx(chain_1s, store, tmp_path)


@pytest.mark.parametrize(
    "delivery,options",
    [("manual", {"policy": "first"}), ("consensus", {"k": 2}), ("auction", {"window": 1.5})],
)
def test_run_batch_with_each_confirming_delivery_method(ctx_1s: Any, delivery: str, options: dict[str, Any]) -> None:
    """Every delivery method of plugins/ (first_response: the tests above), its confirmations
    pending until the next block: every input finalized once, nothing left in escrow."""
    from .scenarios import Outcome, audit, finalized, run_flow

    ctx = ctx_1s
    source = ctx.source(DeliveryMethod.MANUAL_CONFIRMATION)
    start = ctx.chain.block_number() + 1
    outcome = Outcome(f"run_batch, {delivery}, 1 s blocks", 3)
    with ctx.providers(source, ("provider1", "provider2"), from_block=start) as sims:
        state = run_flow(ctx, source, 3, delivery=delivery, delivery_options=options)
        results = state.result()
    finalized(outcome, results, 3)
    outcome = audit(ctx, outcome, source, start)
    assert outcome.passed, (outcome, [s.errors[:2] for s in sims])
    assert ctx.chain.vault.frozen_payment(ctx.devnet.address("client")) == 0, "escrow left frozen"


def test_a_stream_killed_mid_run_resumes_each_input_once(ctx_1s: Any) -> None:
    """stream_batch's process SIGKILLed once half the inputs are on chain (its transactions still
    pending: they land only with the next block), then resumed with the same batch_key."""
    from prefect.settings import PREFECT_API_URL

    from . import scenarios

    outcome = scenarios.stream_crash_and_resume(ctx_1s, 12, PREFECT_API_URL.value())
    assert outcome.passed, outcome


def test_two_processes_sharing_one_wallet_land_every_task_once(ctx_1s: Any) -> None:
    """Two processes publish with one key at once; their nonces wait in the pool for the next block."""
    from . import scenarios

    outcome = scenarios.wallet_shared_by_processes(ctx_1s, 2, 6)
    assert outcome.passed, outcome


def test_the_ogpu_provider_worker_process_serves_a_batch(chain_1s: Devnet, tmp_path: Path) -> None:
    """A real `prefect worker start` of type ogpu-provider (its watcher, the echo source run by the
    local backend, its responder) serves run_batch's FIRST_RESPONSE tasks."""
    import signal

    from ogpu_prefect.flows.run_batch import run_batch
    from ogpu_prefect.storage import LocalStore

    from .test_worker import Fleet, reap

    with LocalStore(tmp_path / "payloads") as store:
        fleet = Fleet(chain_1s, store, tmp_path, "tier-worker")
        try:
            source = fleet.publish_source()
            fleet.create_pool("tier-gpus", [source], wallet_block=f"{fleet.name}-provider1")
            fleet.start_worker("tier-gpus", "provider1")
            fleet.wait_registered(source, "provider1")
            frozen0 = fleet.chain.vault.frozen_payment(chain_1s.address("client"))
            results = run_batch(
                source,
                [{"text": f"t{i}"} for i in range(3)],
                10**16,
                fleet.network,
                fleet.wallet("client"),
                fleet.storage,
                function_name="echo",
                task_timeout=120,
            )
        finally:
            for role in list(fleet.procs):
                fleet.stop(role, signal.SIGKILL)
                reap(chain_1s.address(role), chain_1s.network.chain_id)
    assert [r.status for r in results] == ["finalized"] * 3, (results, fleet.worker_log("provider1"))
    assert [r.result["result"]["upper"] for r in results] == ["T0", "T1", "T2"]
    assert {r.provider.lower() for r in results} == {chain_1s.address("provider1").lower()}
    assert fleet.chain.vault.frozen_payment(chain_1s.address("client")) == frozen0
