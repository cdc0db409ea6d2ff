"""Shared fixtures. Everything runs against a real anvil with the real contracts: one devnet per
test session, and each test that changes chain state runs between an evm_snapshot and an
evm_revert (which also keeps anvil fast).

Tiers: a test that uses a fixture starting anvil or a Prefect server (STACK_FIXTURES, directly or
through other fixtures), or that is marked `slow` or `stack` (it starts one itself, or another
heavy tool), is marked `stack`; every other test is marked `fast`. `./dev test --fast` runs
`-m fast`. A new test lands in its tier by the fixtures it asks for; one that starts anvil, a
Prefect server or a build itself says so with `@pytest.mark.stack`."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ogpu_prefect.chain import devnet as devnet_mod
from ogpu_prefect.chain.devnet import Devnet

STACK_FIXTURES = frozenset({"session_devnet", "prefect_harness"})
"""Fixtures that start anvil or a Prefect server: every fixture that needs one of them (devnet,
env, a module's world) pulls it in, so a test using any of those is in the stack tier."""


# Parallel runs. `./dev test` runs the files on several pytest-xdist workers (`-n N --dist
# loadfile`): each worker is its own session with its own devnet and Prefect server (the same chain
# id, keys and contract addresses on each), so what two test files share is only what is outside
# both: this host's processes, ports, files and network namespaces. Under `--dist loadfile` the
# suite's own scheduler (below) keeps each file on one worker, as loadfile does, and in addition:
#   - the longest file goes out first (WEIGHT_S): a long file started last would be the run's tail;
#   - a worker is given its next file only when it has nothing else left to run.
WEIGHT_S: dict[str, float] = {
    "tests/test_bench_smoke.py": 342,
    "tests/test_worker.py": 183,
    "tests/test_demo.py": 151,
    "tests/test_reliability.py": 127,
    "tests/test_blocktime_tier.py": 124,
    "tests/test_lease_fence.py": 106,
    "tests/test_deploy.py": 92,
    "tests/test_ui.py": 85,
    "tests/test_run_batch.py": 69,
    "tests/test_production_stack.py": 60,
    "tests/test_agent_worker.py": 60,
    "tests/test_production_prefect.py": 54,
    "tests/test_run_form.py": 53,
    "tests/test_functions.py": 44,
    "tests/test_rate_limits.py": 44,
    "tests/test_escalation.py": 41,
    "tests/test_worker_records.py": 39,
    "tests/test_pool_ui.py": 36,
    "tests/test_reputation.py": 34,
    "tests/test_stream_batch.py": 32,
    "tests/test_batch_cancel.py": 30,
    "tests/test_journal.py": 30,
    "tests/test_sdk_tasks.py": 29,
    "tests/test_multihost.py": 28,
    "tests/test_fetch_confinement.py": 26,
    "tests/test_batch_estimate.py": 26,
    "tests/test_worker_cancel.py": 22,
    "tests/test_early_stop.py": 21,
    "tests/test_contracts_forge.py": 19,
    "tests/test_provider_lifecycle.py": 12,
    "tests/test_block_time.py": 12,
}
"""file -> about how many seconds it takes (one process, `--durations`, on the CI
machine; files under 10 s are left out and count DEFAULT_WEIGHT_S). Only the order depends on it."""
DEFAULT_WEIGHT_S = 5.0


def pytest_configure(config: pytest.Config) -> None:
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_SuiteScheduler(), "ogpu-suite-scheduler")


class _SuiteScheduler:
    @pytest.hookimpl
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> Any:
        if config.getvalue("dist") != "loadfile":
            return None
        from xdist.scheduler import LoadFileScheduling

        class SuiteScheduling(LoadFileScheduling):  # type: ignore[misc]
            def _assign_work_unit(self, node: Any) -> None:
                heaviest = max(self.workqueue, key=lambda scope: WEIGHT_S.get(scope, DEFAULT_WEIGHT_S))
                self.workqueue.move_to_end(heaviest, last=False)  # the next one handed out
                super()._assign_work_unit(node)

            def _reschedule(self, node: Any) -> None:
                # xdist hands out more once two tests are left; a worker runs a test only once it
                # knows the next, so one left is soon enough (and the next file is not taken early
                # from a worker that will be free first).
                if node.shutting_down:
                    return
                if not self.workqueue:
                    node.shutdown()
                    return
                if self._pending_of(self.assigned_work[node]) <= 1:
                    self._assign_work_unit(node)

        return SuiteScheduling(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        needs_stack = STACK_FIXTURES.intersection(getattr(item, "fixturenames", ()))
        if needs_stack or item.get_closest_marker("slow") or item.get_closest_marker("stack"):
            item.add_marker(pytest.mark.stack)
        else:
            item.add_marker(pytest.mark.fast)


@pytest.fixture(autouse=True, scope="session")
def input_roots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Run parameters read only under the input roots (settings.py; default: the working
    directory): the tests' input files live in pytest's temporary folder, which is added."""
    key = "PREFECT_INTEGRATIONS_OGPU_INPUT_ROOTS"
    before = os.environ.get(key)
    os.environ[key] = json.dumps([".", str(tmp_path_factory.getbasetemp())])
    yield
    if before is None:
        os.environ.pop(key, None)
    else:
        os.environ[key] = before


@pytest.fixture(scope="session")
def session_devnet() -> Iterator[Devnet]:
    net = devnet_mod.start()
    yield net
    net.stop()


@pytest.fixture
def devnet(session_devnet: Devnet) -> Iterator[Devnet]:
    """The session's devnet, rolled back after the test. Make new TxSenders per test: the
    rollback rewinds nonces."""
    snap = session_devnet.snapshot()
    yield session_devnet
    session_devnet.revert(snap)


@pytest.fixture
def env(devnet: Devnet, tmp_path: Path) -> Iterator[tuple[Any, ...]]:
    """(devnet, network block, client wallet block, storage block, LocalStore): a client's
    blocks over a payload folder served on loopback HTTP."""
    from ogpu_prefect.blocks import OGPUNetwork, OGPUStorage, OGPUWallet
    from ogpu_prefect.storage import LocalStore

    with LocalStore(tmp_path / "payloads") as store:
        network = OGPUNetwork.from_network(devnet.network)
        wallet = OGPUWallet(private_key=devnet.key("client"))
        storage = OGPUStorage(write_url=f"file://{tmp_path / 'payloads'}", read_url=store.base_url)
        yield devnet, network, wallet, storage, store


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """Prefect's test harness (a real, temporary API server with SQLite), once per session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


@pytest.fixture(autouse=True, scope="module")
def prefect_services_drained(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each file, Prefect's process-wide services have sent what they hold (to the harness,
    still up): one left on an API that is gone fails here, in the file that left it, instead of
    slowing every later file on this worker and the harness's teardown (tests/prefect_env.py)."""
    yield
    from .prefect_env import drained_or_fail

    drained_or_fail(request.module.__name__)


@pytest.fixture
def events_sink() -> Iterator[object]:
    """Records the Prefect events this process emits: our EventSender, sending through Prefect's
    own test client (AssertingEventsClient) instead of a websocket to the server."""
    from prefect.events.clients import AssertingEventsClient

    from ogpu_prefect import events

    previous = dict(events._senders)
    AssertingEventsClient.reset()
    test_sender = events.sender(replace=events.EventSender(client_factory=AssertingEventsClient))

    class Sink:
        def events(self) -> list[object]:
            test_sender.flush()
            return [e for c in AssertingEventsClient.all for e in c.events]

        def names(self) -> list[str]:
            return [e.event for e in self.events()]  # type: ignore[attr-defined]

    yield Sink()
    test_sender.flush()
    events._senders.clear()
    events._senders.update(previous)


@pytest.fixture(autouse=True)
def result_storage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Each test's own Prefect result storage: the result cache (result_cache.py) is keyed on the
    network, and every test's devnet is the same network (snapshot and revert), so without this
    one test's answers would be another's cache hits. Processes a test starts inherit it."""
    from prefect.settings import PREFECT_RESULTS_LOCAL_STORAGE_PATH, temporary_settings

    path = tmp_path_factory.mktemp("results")
    key = "PREFECT_RESULTS_LOCAL_STORAGE_PATH"
    before = os.environ.get(key)
    os.environ[key] = str(path)
    with temporary_settings(updates={PREFECT_RESULTS_LOCAL_STORAGE_PATH: path}):
        yield path
    if before is None:
        os.environ.pop(key, None)
    else:
        os.environ[key] = before
