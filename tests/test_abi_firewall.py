"""The ABI firewall itself (tests/abi_firewall.py), against a real anvil: what the real network's
contracts have passes, our devnet's extensions are refused as views, as gas estimates, as signed
transactions (EIP-1559 and legacy) and inside JSON-RPC batches, with ids kept."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests
from eth_utils import keccak, to_checksum_address

from ogpu_prefect.chain.abi import spec
from ogpu_prefect.chain.connection import Chain
from ogpu_prefect.chain.devnet import CHAIN_ID, Devnet
from ogpu_prefect.chain.errors import NoContractError, RpcError
from ogpu_prefect.chain.rpc import Rpc
from ogpu_prefect.chain.signing import Signer
from ogpu_prefect.chain.tx import Call
from ogpu_prefect.chain.types import DeliveryMethod, TaskStatus

from .abi_firewall import (
    CLONES,
    MAINNET_ABIS,
    REFUSED_CODE,
    SINGLETONS,
    AbiFirewall,
    mainnet_selectors,
    mainnet_topics,
    raw_tx_target,
)
from .helpers import publish_source, publish_task, register, respond

ETHER = 10**18


@dataclass
class World:
    direct: Chain
    proxied: Chain
    source: str
    task: str
    response: str


@pytest.fixture
def firewall(devnet: Devnet) -> Iterator[AbiFirewall]:
    with AbiFirewall(devnet.rpc_url, singletons=devnet.contracts) as fw:
        yield fw


@pytest.fixture
def world(devnet: Devnet, firewall: AbiFirewall) -> World:
    """A source, a task and a response, made on a direct connection (not through the firewall)."""
    direct = Chain(devnet.network)
    client, provider = direct.sender(devnet.key("client")), direct.sender(devnet.key("provider1"))
    source = publish_source(direct, client, DeliveryMethod.MANUAL_CONFIRMATION)
    register(direct, provider, source)
    task = publish_task(direct, client, source, payment=10**16)
    provider.transact(direct.nexus.attempt(task, provider.address, 10**16))
    response = respond(direct, provider, task, 10**16, "http://127.0.0.1:9/r.json")
    return World(direct, Chain(devnet.network.with_rpc(firewall.url)), source, task, response)


def refused_names(fw: AbiFirewall) -> list[str | None]:
    return [r.name for r in fw.refused]


# ---- no chain needed ----


def test_selectors_from_the_abi_files_agree_with_selectors_txt() -> None:
    listed: dict[str, set[bytes]] = {}
    topics: set[bytes] = set()
    current = ""
    for line in (MAINNET_ABIS.parent / "selectors.txt").read_text().splitlines():
        if line.startswith("## "):
            current = line[3:].strip()
            listed[current] = set()
        elif line.startswith("fu "):
            listed[current].add(bytes.fromhex(line.split()[1]))
        elif line.startswith("ev "):
            topics.add(bytes.fromhex(line.split()[1]))
    assert set(listed) == set(SINGLETONS + CLONES)
    for name, selectors in listed.items():
        assert mainnet_selectors(name) == selectors, name
    assert mainnet_topics() == topics


def test_raw_transactions_are_decoded_type2_and_legacy() -> None:
    signer = Signer("0x" + "11" * 32)
    to, data = "0x" + "ab" * 20, bytes.fromhex("deadbeef00")
    base = {"chainId": CHAIN_ID, "nonce": 3, "gas": 50_000, "value": 7, "data": data}
    type2, _ = signer.sign({**base, "to": to, "maxFeePerGas": 10, "maxPriorityFeePerGas": 1})
    legacy, _ = signer.sign({**base, "to": to, "gasPrice": 10})
    creation, _ = signer.sign({**base, "gasPrice": 10})
    assert type2[0] == 2 and legacy[0] >= 0xC0
    checksummed = to_checksum_address(to)
    assert raw_tx_target(type2) == raw_tx_target(legacy) == (checksummed, data)
    assert raw_tx_target(creation) == (None, data)
    with pytest.raises(ValueError, match="type 3"):
        raw_tx_target(b"\x03" + type2[1:])


# ---- views and estimates ----


def test_mainnet_views_pass_and_devnet_only_views_are_refused(world: World, firewall: AbiFirewall, devnet) -> None:
    c = world.proxied
    client = devnet.address("client")
    assert c.vault.balance_of(client) == world.direct.vault.balance_of(client)
    assert c.task(world.task).get_status() == TaskStatus.RESPONDED
    assert c.source(world.source).get_client() == client  # Source has getClient on the real network
    c.response(world.response).get_status()
    assert firewall.refused == [] and firewall.allowed_count >= 4

    refused = [
        lambda: c.controller.task_implementation(),
        lambda: c.task(world.task).core(),
        lambda: c.task(world.task).get_client(),  # a Task's, unlike a Source's, is devnet-only
        lambda: c.vault.escrow_of(world.task),
        lambda: c.response(world.response).core(),
        lambda: c.nexus.source_implementation(),
    ]
    for call in refused:
        with pytest.raises(RpcError, match="abi firewall: selector 0x[0-9a-f]{8} .* is not in the real network's"):
            call()
    assert refused_names(firewall) == [
        "taskImplementation()",
        "core()",
        "getClient()",
        "escrowOf(address)",
        "core()",
        "sourceImplementation()",
    ]
    assert all(r.method == "eth_call" for r in firewall.refused)
    assert [r.to for r in firewall.refused][:3] == [devnet.network.controller, world.task, world.task]
    assert firewall.refused[0].selector == "0x" + spec("Controller").fn("taskImplementation").selector.hex()
    assert c.has_extensions() is False, "through the firewall the client sees the real network's contracts"


def test_refusal_messages_name_the_contract_type(world: World, firewall: AbiFirewall) -> None:
    with pytest.raises(RpcError) as e:
        world.proxied.task(world.task).core()
    assert e.value.code == REFUSED_CODE
    assert e.value.message == (
        f"abi firewall: selector 0x{spec('Task').fn('core').selector.hex()} (core()) "
        "is not in the real network's Task ABI"
    )
    assert e.value.revert_data is None  # never mistaken for a revert


def test_clones_of_unknown_implementations_get_the_union_of_source_task_response(world: World, devnet) -> None:
    only_singletons = {n: a for n, a in devnet.contracts.items() if n in SINGLETONS}
    with AbiFirewall(devnet.rpc_url, singletons=only_singletons) as fw:
        c = Chain(devnet.network.with_rpc(fw.url))
        c.task(world.task).get_client()  # Source's getClient() selector: in the union
        with pytest.raises(RpcError, match="Source/Task/Response ABI"):
            c.task(world.task).core()
    assert refused_names(fw) == ["core()"]


def test_estimate_gas_refuses_devnet_only_writes(world: World, firewall: AbiFirewall, devnet) -> None:
    sender = world.proxied.sender(devnet.key("client"))
    with pytest.raises(RpcError, match=r"reclaimExpired\(address\).* Controller ABI"):
        sender.estimate([world.proxied.controller.reclaim_expired(world.task)])
    assert firewall.refused[-1][:2] == ("eth_estimateGas", devnet.network.controller)
    [gas] = sender.estimate([world.proxied.vault.deposit(sender.address, value=ETHER)])
    assert gas > 21_000
    sender.estimate([Call("", spec("Manager").deploy_data())])  # a creation: the devnet's own business
    assert len(firewall.refused) == 1


def test_an_address_learnt_as_a_clone_is_looked_at_again_after_a_revert(
    world: World, firewall: AbiFirewall, devnet
) -> None:
    snap = devnet.snapshot()
    client = world.direct.sender(devnet.key("client"))
    task = publish_task(world.direct, client, world.source, payment=10**16)
    world.proxied.task(task).get_status()  # the firewall learns: a Task clone
    devnet.revert(snap)  # now nothing is there
    with pytest.raises(NoContractError):  # passed through to anvil, which has no code there
        world.proxied.task(task).core()
    assert firewall.refused == []


# ---- transactions ----


def test_a_devnet_only_write_is_refused_at_send_and_a_mainnet_write_is_mined(
    world: World, firewall: AbiFirewall, devnet
) -> None:
    sender = world.proxied.sender(devnet.key("client"))
    nonce = world.direct.rpc.call("eth_getTransactionCount", [sender.address, "pending"])
    with pytest.raises(RpcError, match=r"reclaimExpired\(address\)"):
        sender.send([world.proxied.controller.reclaim_expired(world.task)], 300_000)  # gas given: no estimate
    assert firewall.refused == [
        ("eth_sendRawTransaction", devnet.network.controller, firewall.refused[0].selector, "reclaimExpired(address)")
    ]
    assert world.direct.rpc.call("eth_getTransactionCount", [sender.address, "pending"]) == nonce, "never reached anvil"

    balance = world.direct.vault.balance_of(sender.address)
    receipt = sender.transact(world.proxied.vault.deposit(sender.address, value=ETHER))
    assert receipt.status == 1
    assert world.direct.vault.balance_of(sender.address) == balance + ETHER
    assert len(firewall.refused) == 1


def test_legacy_transactions_are_checked_too(world: World, firewall: AbiFirewall, devnet) -> None:
    signer, rpc = Signer(devnet.key("client2")), Rpc(firewall.url)
    nonce = int(rpc.call("eth_getTransactionCount", [signer.address, "pending"]), 16)
    gas_price = 2 * int(rpc.call("eth_gasPrice"), 16)

    def legacy(call: Call, nonce: int) -> str:
        tx = {"chainId": CHAIN_ID, "nonce": nonce, "gasPrice": gas_price, "gas": 300_000, "to": call.to}
        raw, _ = signer.sign({**tx, "data": call.data, "value": call.value})
        return "0x" + raw.hex()

    with pytest.raises(RpcError, match="reclaimExpired"):
        rpc.call("eth_sendRawTransaction", [legacy(world.proxied.controller.reclaim_expired(world.task), nonce)])
    tx_hash = rpc.call("eth_sendRawTransaction", [legacy(world.proxied.vault.deposit(signer.address, value=1), nonce)])
    deadline = time.monotonic() + 10
    while (receipt := world.direct.rpc.call("eth_getTransactionReceipt", [tx_hash])) is None:
        assert time.monotonic() < deadline, "the legacy deposit was not mined"
        time.sleep(0.02)
    assert int(receipt["status"], 16) == 1
    assert refused_names(firewall) == ["reclaimExpired(address)"]


# ---- batches, other methods, logs, strict mode ----


def test_batches_answer_refused_entries_in_place_with_their_ids(world: World, firewall: AbiFirewall, devnet) -> None:
    c = world.proxied
    reads = [
        c.vault.read.balance_of(devnet.address("client")),
        c.controller.read.task_implementation(),
        c.task(world.task).read.get_status(),
        c.task(world.task).read.core(),
    ]
    out = c.rpc.batch([r.request() for r in reads])
    assert int(out[0], 16) > 0 and int(out[2], 16) == int(TaskStatus.RESPONDED)
    assert isinstance(out[1], RpcError) and "taskImplementation()" in out[1].message
    assert isinstance(out[3], RpcError) and "core()" in out[3].message

    # Raw: odd ids, a non-call method, and an all-refused batch (which never reaches anvil).
    body = [
        {"jsonrpc": "2.0", "id": "z", "method": reads[1].request()[0], "params": reads[1].request()[1]},
        {"jsonrpc": "2.0", "id": 40, "method": "eth_chainId", "params": []},
        {"jsonrpc": "2.0", "id": None, "method": reads[0].request()[0], "params": reads[0].request()[1]},
    ]
    replies = requests.post(firewall.url, json=body, timeout=10).json()
    assert [r["id"] for r in replies] == ["z", 40, None]
    assert replies[0]["error"]["code"] == REFUSED_CODE and "result" not in replies[0]
    assert int(replies[1]["result"], 16) == CHAIN_ID and replies[2]["result"].startswith("0x")
    only_refused = requests.post(firewall.url, json=[body[0], {**body[0], "id": 2}], timeout=10).json()
    assert [r["id"] for r in only_refused] == ["z", 2] and all("error" in r for r in only_refused)
    assert len(firewall.refused) == 5


def test_other_methods_eoas_and_event_filters(world: World, firewall: AbiFirewall, devnet) -> None:
    c = world.proxied
    eoa = devnet.address("agent")
    assert c.rpc.call("eth_call", [{"to": eoa, "data": "0xdeadbeef"}, "latest"]) == "0x"  # no code: untouched
    assert c.block_number() == world.direct.block_number()
    events = c.cursor(["SourcePublished", "TaskPublished", "ResponseSubmitted"], 0).poll()
    assert {e.name for e in events} == {"SourcePublished", "TaskPublished", "ResponseSubmitted"}
    assert firewall.refused == []

    bogus = "0x" + keccak(text="Bogus(address)").hex()
    with pytest.raises(RpcError, match="abi firewall: event"):
        c.rpc.call("eth_getLogs", [{"fromBlock": "0x0", "topics": [[bogus]]}])
    assert firewall.refused[-1][:3] == ("eth_getLogs", None, bogus)


def test_strict_mode_asserts_on_exit(devnet) -> None:
    with AbiFirewall(devnet.rpc_url, singletons=devnet.contracts, strict=True) as fw:
        Chain(devnet.network.with_rpc(fw.url)).vault.balance_of(devnet.address("client"))
    strict = AbiFirewall(devnet.rpc_url, singletons=devnet.contracts, strict=True)
    with pytest.raises(AssertionError, match=r"taskImplementation\(\)"), strict:
        Chain(devnet.network.with_rpc(strict.url)).has_extensions()
