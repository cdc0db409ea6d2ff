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
