"""A hostile client against a real provider (`Provider.execute`, real anvil, real HTTP servers in
threads): the config URL it puts on chain points at the provider's loopback, a private address,
a local file, a redirect to loopback, a trickling body or a dot-segment escape. Nothing is
fetched outside the provider's allowed origins, nothing leaks into a response, and no response
is submitted. The reproduced findings (old code): the loopback JSON and the file came back in the
public response; a slow body held execute() past 40 s."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ogpu_prefect.chain.connection import Chain
from ogpu_prefect.chain.structs import TaskParams
from ogpu_prefect.chain.types import Environment, TaskStatus
from ogpu_prefect.client import OGPUClient
from ogpu_prefect.fetching import StorageError, UntrustedUrlError
from ogpu_prefect.models import SourceSpec
from ogpu_prefect.plugin_manager import PluginKind, create
from ogpu_prefect.storage import IPFS_GATEWAY, LocalStore
from ogpu_prefect.worker.provider import Provider

from . import scenarios_fetch
from .fetch_servers import RedirectServer, SecretServer, TrickleServer

ECHO = Path(__file__).resolve().parents[1] / "flows" / "sources" / "echo" / "docker-compose.cpu.yml"


class World:
    def __init__(self, devnet, store: LocalStore) -> None:
        self.chain, self.store = Chain(devnet.network), store
        self.client = OGPUClient(self.chain, devnet.key("client"), store)
        self.source = self.client.publish_source(
            SourceSpec(name="echo", cpu=f"file://{ECHO}", min_payment=10**15, min_available_lockup=10**18)
        )
        self.provider_key = devnet.key("provider3")

    def provider(self, **options) -> Provider:
        p = Provider(
            Chain(self.chain.network), self.provider_key, self.store, create(PluginKind.HARDWARE_BACKEND, "local"),
            Environment.CPU, **options,
        )  # fmt: skip
        p.ensure_standing([self.source])
        return p

    def hostile_task(self, config_url: str) -> str:
        """A task whose config URL the client chose freely (sent as a raw publishTask)."""
        call = self.chain.controller.publish_task(TaskParams(self.source, config_url, self.chain.now() + 300, 10**16))
        receipt = self.client.sender.transact(call)
        from ogpu_prefect.chain.logs import created_address

        return created_address(receipt, "TaskPublished", "task", self.chain.network.nexus)

    def run(self, provider: Provider, config_url: str) -> tuple[str, Exception]:
        task = self.hostile_task(config_url)
        assert provider.attempt([task]) == [task]
        with pytest.raises(StorageError) as e:
            provider.execute(task)
        assert self.chain.task(task).get_status() is TaskStatus.ATTEMPTED, "no response was submitted"
        assert int(self.chain.task(task).response_of(provider.address), 16) == 0
        return task, e.value

    def leaked(self) -> bool:
        return any(b"hunter2" in p.read_bytes() for p in self.store.root.iterdir() if p.is_file())


@pytest.fixture
def world(devnet, tmp_path: Path) -> Iterator[World]:
    with LocalStore(tmp_path / "payloads") as store:
        yield World(devnet, store)


def test_the_default_origins_are_the_store_and_the_gateway(world: World) -> None:
    provider = world.provider()
    try:
        assert provider.config_origins == [world.store.base_url, IPFS_GATEWAY]
    finally:
        provider.close()


def test_configs_on_loopback_private_addresses_and_files_are_not_read(world: World, tmp_path: Path) -> None:
    secret = tmp_path / "secret.json"
    secret.write_text('{"function_name": "echo", "data": {"db_password": "hunter2"}}')
    provider = world.provider()
    try:
        with SecretServer() as internal:
            for url in [f"{internal.url}/config.json", "http://10.255.255.1/config.json", f"file://{secret}"]:
                t0 = time.monotonic()
                _, error = world.run(provider, url)
                assert isinstance(error, UntrustedUrlError), error
                assert time.monotonic() - t0 < 9, "refused without a connection attempt (one would hang 10 s)"
            assert internal.hits == 0
    finally:
        provider.close()
    assert not world.leaked()


def test_a_redirect_or_a_dot_segment_does_not_leave_the_allowed_origins(world: World) -> None:
    with SecretServer() as internal, RedirectServer(f"{internal.url}/secret") as hop:
        provider = world.provider(config_origins=[f"{hop.url}/configs/", f"{internal.url}/public/"])
        try:
            for url in [f"{hop.url}/configs/a.json", f"{internal.url}/public/../secret"]:
                _, error = world.run(provider, url)
                assert isinstance(error, UntrustedUrlError), error
        finally:
            provider.close()
        assert hop.paths == ["/configs/a.json"] and internal.hits == 0
    assert not world.leaked()


def test_a_trickling_config_gives_up_at_the_total_deadline(world: World) -> None:
    with TrickleServer(every_s=0.5, for_s=30.0) as slow:
        provider = world.provider(config_origins=[slow.url])
        try:
            t0 = time.monotonic()
            _, error = world.run(provider, f"{slow.url}/config.json")
            held = time.monotonic() - t0
        finally:
            provider.close()
    assert "longer than 10 s" in str(error) and held < 15, (held, error)


def test_a_compose_url_on_the_providers_network_is_not_read(world: World) -> None:
    """The compose file a source's metadata names is chosen by the source's owner: any public
    host, never the provider's loopback (the old code fetched it with requests)."""
    with SecretServer() as internal:
        source = world.client.publish_source(
            SourceSpec(name="x", cpu=f"{internal.url}/compose.yml", min_payment=10**15, min_available_lockup=10**18)
        )
        provider = world.provider()
        try:
            with pytest.raises(UntrustedUrlError):
                provider.compose_for(source)
        finally:
            provider.close()
        assert internal.hits == 0


def test_a_compose_url_under_an_origin_the_operator_allowed_is_read(world: World, tmp_path: Path) -> None:
    """A provider's operator allows its own storage on a private network (config_origins): a
    source's compose file there is read as its configs are (the old code refused every
    non-public address for compose files, so no host of a private deployment could serve one)."""
    compose = ECHO.read_text().replace("x-ogpu-local:", f"x-ogpu-local:\n      working_dir: {ECHO.parent}")
    (tmp_path / "ops").mkdir()
    (tmp_path / "ops" / "compose.yml").write_text(compose)
    with LocalStore(tmp_path / "ops") as ops:
        source = world.client.publish_source(
            SourceSpec(name="x", cpu=f"{ops.base_url}/compose.yml", min_payment=10**15, min_available_lockup=10**18)
        )
        provider = world.provider(config_origins=[world.store.base_url, ops.base_url])
        try:
            spec = provider.compose_for(source).local_spec()
        finally:
            provider.close()
    assert spec.working_dir == str(ECHO.parent) and "main.py" in spec.command


@pytest.mark.parametrize("read_url", ["http://127.0.0.1:9", "other-store"])
def test_a_store_providers_cannot_read_publishes_nothing(devnet, tmp_path: Path, read_url: str) -> None:
    """A store whose read_url nobody can read (or that serves other files): a typed error naming
    the storage's read_url before any transaction; the old code published and froze the payment."""
    from ogpu_prefect.chain.errors import InvalidInputError
    from ogpu_prefect.models import TaskInput
    from ogpu_prefect.storage import FsspecStore

    with LocalStore(tmp_path / "payloads") as good, LocalStore(tmp_path / "other") as other:
        chain = Chain(devnet.network)
        source = OGPUClient(chain, devnet.key("client"), good).publish_source(
            SourceSpec(name="echo", cpu=f"file://{ECHO}", min_payment=10**15, min_available_lockup=10**18)
        )
        bad = FsspecStore(f"file://{tmp_path / 'payloads'}", other.base_url if read_url == "other-store" else read_url)
        client = OGPUClient(chain, devnet.key("client"), bad)
        frozen, block = chain.vault.frozen_payment(client.address), chain.block_number()
        with pytest.raises(InvalidInputError) as e:
            client.publish_tasks(source, [TaskInput(function_name="echo", data={"i": 1})], 10**16, chain.now() + 300)
        assert e.value.field == "storage.read_url"
        assert chain.vault.frozen_payment(client.address) == frozen
        assert chain.block_number() == block, "no transaction was sent"


# ---- the bench/reliability.py scenarios, small ----


@pytest.fixture
def ctx(devnet, tmp_path: Path):
    from .scenarios import Ctx

    with LocalStore(tmp_path / "payloads") as store:
        yield Ctx(devnet, store, tmp_path)


@pytest.mark.parametrize("kind", scenarios_fetch.PROVIDER_FETCHES)
def test_scenario_provider_fetch(ctx, kind: str) -> None:
    outcome = scenarios_fetch.provider_fetch(ctx, kind, n=1)
    assert outcome.passed, outcome


@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize("name", ["stream_inputs_escape", "scheduled_pattern_escape", "unreadable_read_url"])
def test_scenario_run_parameters(ctx, name: str) -> None:
    outcome = getattr(scenarios_fetch, name)(ctx)
    assert outcome.passed, outcome
