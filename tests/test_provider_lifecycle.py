"""A provider leaving sources (`ogpu-prefect provider unregister`, `Nexus.unregister` of the real
network's ABI) and taking its stake back (Vault.unbond, claim after the unbonding period), and a
provider's hardware on the Terminal (`setBaseData` / `baseDataOf`). Real anvil with our contracts;
the CLI runs in-process as a user's shell would run it (tests/test_cli.py's World)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ogpu_prefect.chain.devnet import Devnet
from ogpu_prefect.chain.types import DeliveryMethod, Environment
from ogpu_prefect.cli.output import money
from ogpu_prefect.inspect import source_providers, source_registrants
from ogpu_prefect.standing import HARDWARE_SCHEMA, leave_sources, machine_hardware, publish_data
from ogpu_prefect.storage import LocalStore, fetch_json

from .helpers import publish_source, register
from .test_cli import ETHER, World, advance, world  # noqa: F401  (world: the fixture)
from .test_worker import Fleet, fleet  # noqa: F401  (the fixture)


def test_unregister_leaves_the_source_and_unbonds(world: World) -> None:  # noqa: F811
    source, other = world.source("manual"), world.source("manual")
    me = world.address("provider1")
    world.ok("provider", "register", source, other)
    assert source_registrants(world.chain, source) == [me]
    locked = world.chain.vault.lockup_of(me)

    out = world.ok("provider", "unregister", source, "--unbond", "2ogpu")
    assert out["provider"] == me and out["unregistered"] == [source] and out["not_registered"] == []
    assert [s["step"] for s in out["transactions"]] == ["unregister", "unbond"]
    assert out["registrations"] == [{"source": source, "registered": False, "registrant_id": 0, "environment": None}]
    assert out["unbonding"] == money(2 * ETHER) and out["lockup"] == money(locked - 2 * ETHER)
    # On chain: off `source`, still on `other`; the stake is unbonding, claimable after the period.
    assert source_registrants(world.chain, source) == []
    assert source_registrants(world.chain, other) == [me]
    assert world.chain.vault.unbonding_of(me) == 2 * ETHER
    period = world.chain.vault.UNBONDING_PERIOD()
    advance(world.devnet, period + 1)
    before = world.chain.vault.balance_of(me)
    world.ok("vault", "claim", "--wallet", "provider1")
    assert world.chain.vault.balance_of(me) == before + 2 * ETHER

    again = world.ok("provider", "unregister", source)
    assert again["unregistered"] == [] and again["not_registered"] == [source] and again["transactions"] == []


def test_unregister_refuses_an_unbond_above_the_lockup_before_any_transaction(world: World) -> None:  # noqa: F811
    source = world.source("manual")
    me = world.address("provider1")
    world.ok("provider", "register", source)
    nonce = world.chain.rpc.call("eth_getTransactionCount", [me, "latest"])
    run = world.cli("provider", "unregister", source, "--unbond", "5000ogpu")
    assert run.code == 2 and "--unbond" in run.err and run.out == ""
    assert world.chain.rpc.call("eth_getTransactionCount", [me, "latest"]) == nonce
    assert source_registrants(world.chain, source) == [me], "still registered: nothing was sent"
    unknown = world.cli("provider", "unregister", "0x" + "12" * 20)
    assert unknown.code == 2 and "SOURCE" in unknown.err


def test_hardware_base_data_is_set_once_and_read_back(devnet: Devnet, tmp_path: Path) -> None:
    from ogpu_prefect.chain.connection import Chain

    chain = Chain(devnet.network)
    sender = chain.sender(devnet.key("provider1"))
    with LocalStore(tmp_path / "payloads") as store:
        doc = machine_hardware()
        assert doc["schema"] == HARDWARE_SCHEMA and doc["cpu"]["cores"] >= 1 and doc["memory_bytes"] > 0
        assert publish_data(chain, sender, store, "base", doc) is not None
        url = chain.terminal.base_data_of(sender.address)
        assert fetch_json(url) == doc
        assert publish_data(chain, sender, store, "base", doc) is None, "unchanged: no second transaction"
        # The client's view of a source's providers shows it (the real network's views only).
        source = publish_source(chain, chain.sender(devnet.key("client")), DeliveryMethod.FIRST_RESPONSE)
        register(chain, sender, source)
        (row,) = source_providers(chain, source)
        assert row.address == sender.address and row.base_data == url and row.eligible
        assert row.environment is Environment.CPU
        assert list(leave_sources(chain, sender, sender.address, [source])) == [source]
        assert source_providers(chain, source) == []


@pytest.mark.usefixtures("prefect_harness")
def test_the_worker_leaves_sources_and_reports_its_hardware(fleet: Fleet) -> None:  # noqa: F811
    """A real `ogpu-provider` worker process: the pool's `leave_sources` takes it off a source it
    served before; its machine's hardware is on the Terminal once it has started (base data, read
    back from the chain and the worker's storage), and its live data every `live_data_interval_s`."""
    chain = fleet.chain
    old, kept = fleet.publish_source(), fleet.publish_source()
    me = fleet.devnet.address("provider1")
    register(chain, chain.sender(fleet.devnet.key("provider1")), old)  # a source it served before
    pool = f"{fleet.name}-pool"
    fleet.create_pool(pool, [kept], f"{fleet.name}-provider1", leave_sources=[old], live_data_interval_s=10)
    fleet.start_worker(pool, "provider1")
    fleet.wait_registered(kept, "provider1")
    base = _wait_for(lambda: chain.terminal.base_data_of(me), fleet, 60)
    doc = fetch_json(base)
    here = machine_hardware()
    assert (
        doc["schema"] == HARDWARE_SCHEMA and doc["cpu"] == here["cpu"] and doc["memory_bytes"] == here["memory_bytes"]
    )
    assert chain.source(old).get_registrant_id(me) == 0, "left the source of leave_sources"
    assert source_registrants(chain, kept) == [me]
    live = fetch_json(_wait_for(lambda: chain.terminal.live_data_of(me), fleet, 60))
    assert live["schema"] == "ogpu-prefect/live/1" and live["memory_available_bytes"] > 0, live
    assert "left 1 source(s)" in fleet.worker_log("provider1")


def _wait_for(read: Callable[[], str], on: Fleet, timeout: float) -> str:
    deadline = time.time() + timeout
    while not (value := read()):
        assert on.procs["provider1"].poll() is None and time.time() < deadline, on.worker_log("provider1")
        time.sleep(0.3)
    return value


def test_dry_run_and_unregister_use_only_the_real_networks_abi(world: World) -> None:  # noqa: F811
    """Through the ABI firewall (tests/abi_firewall.py, strict): the dry run's reads and gas
    estimate, the unserved warning's reads, and unregister + unbond exist on the real network."""
    from .abi_firewall import AbiFirewall

    source = world.source("manual")
    world.ok("provider", "register", source)
    with AbiFirewall(world.devnet.rpc_url, singletons=world.devnet.contracts, strict=True) as fw:
        via = ["--rpc-url", fw.url]
        est = world.ok("task", "publish", source, "--data", "{}", "--function", "echo", "--dry-run", *via)
        assert est["gas_estimated_by"] == "eth_estimateGas" and len(est["providers"]) == 1
        out = world.ok("provider", "unregister", source, "--unbond", "1ogpu", *via)
        assert out["unregistered"] == [source]
    assert fw.allowed_count > 5 and not fw.refused, fw.refused
