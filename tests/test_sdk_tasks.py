"""The SDK-parity Prefect tasks on the devnet, each called inside a flow against Prefect's test
server: reads (ogpu_prefect/read_tasks.py), the Vault (ogpu_prefect/vault.py) and agents and pairing
(ogpu_prefect/agent_tasks.py). Bad input is refused with a typed error naming the field before any
transaction (the account's nonce does not move)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from prefect import flow

from ogpu_prefect import agent_tasks, read_tasks, vault
from ogpu_prefect.agents import NotAgentError
from ogpu_prefect.blocks import OGPUNetwork, OGPUWallet
from ogpu_prefect.chain.connection import Chain
from ogpu_prefect.chain.errors import InvalidInputError, UnbondingPeriodNotElapsedError, UnknownSourceInputError
from ogpu_prefect.chain.rpc import Rpc
from ogpu_prefect.chain.types import DeliveryMethod, ResponseStatus, TaskStatus
from ogpu_prefect.inspect import ResponseSnapshot, SourceSnapshot, TaskSnapshot, VaultSnapshot
from ogpu_prefect.validation import SecretInWrongFieldError

from .helpers import ETHER, answered_task, publish_source, register

pytestmark = pytest.mark.usefixtures("prefect_harness")


class World:
    """The devnet, a saved network block `net`, and a saved wallet block per role (`<role>`)."""

    def __init__(self, devnet: Any) -> None:
        self.devnet = devnet
        self.chain = Chain(devnet.network)

    def address(self, role: str) -> str:
        return str(self.devnet.address(role))

    def nonce(self, role: str) -> int:
        return int(self.chain.rpc.call("eth_getTransactionCount", [self.address(role), "pending"]), 16)

    def refused(self, role: str, cases: list[tuple[Callable[[], Any], type[Exception], str | None]]) -> None:
        """Each call raises its error naming its field, and `role` sent nothing (one flow for all)."""

        def run() -> list[Exception | None]:
            out: list[Exception | None] = []
            for call, _, _ in cases:
                try:
                    call()
                    out.append(None)
                except Exception as e:
                    out.append(e)
            return out

        before = self.nonce(role)
        for (_, error, field), raised in zip(cases, in_flow(run)):
            assert isinstance(raised, error), (error, raised)
            assert getattr(raised, "field", None) == field, raised
        assert self.nonce(role) == before, "no transaction before the refusals"


@pytest.fixture(scope="module")
def blocks(session_devnet: Any, prefect_harness: None) -> None:
    OGPUNetwork.from_network(session_devnet.network).save("net", overwrite=True)
    for role in ("client", "client2", "master", "provider1", "provider2", "agent"):
        OGPUWallet(private_key=session_devnet.key(role)).save(role, overwrite=True)


@pytest.fixture
def world(devnet: Any, blocks: None) -> World:
    return World(devnet)


def in_flow(call: Callable[[], Any]) -> Any:
    @flow(name="sdk-task-test")
    def run() -> Any:
        return call()

    return run()


def advance(devnet: Any, seconds: int) -> None:
    rpc = Rpc(devnet.rpc_url)
    rpc.call("evm_increaseTime", [seconds])
    rpc.call("evm_mine")


# ---- reads ----


def test_read_tasks_snapshot_a_task_its_responses_and_its_source(world: World) -> None:
    chain = world.chain
    client, provider = chain.sender(world.devnet.key("client")), chain.sender(world.devnet.key("provider1"))
    source = publish_source(chain, client, DeliveryMethod.FIRST_RESPONSE)
    register(chain, provider, source)
    task = answered_task(chain, client, provider, source)

    def reads() -> tuple[TaskSnapshot, list[ResponseSnapshot], SourceSnapshot]:
        return (
            read_tasks.task_snapshot(task, network="net"),
            read_tasks.get_task_responses(task, network="net"),
            read_tasks.source_snapshot(source, network="net"),
        )

    snap, responses, src = in_flow(reads)
    assert (snap.address, snap.source, snap.status) == (task, source, TaskStatus.FINALIZED)
    assert snap.winning_provider == provider.address and snap.attempt_count == 1
    assert [(r.task, r.provider, r.status, r.data_url) for r in responses] == [
        (task, provider.address, ResponseStatus.CONFIRMED, f"https://r/{task}")
    ]
    assert (src.address, src.client, src.task_count, src.registrant_count) == (source, client.address, 1, 1)
    assert src.delivery_method is DeliveryMethod.FIRST_RESPONSE
    with pytest.raises(UnknownSourceInputError) as bad:
        in_flow(lambda: read_tasks.source_snapshot(task, network="net"))
    assert bad.value.field == "source"
    with pytest.raises(InvalidInputError) as bad:
        in_flow(lambda: read_tasks.get_task_responses("0x12", network="net"))
    assert bad.value.field == "task_address"
    with pytest.raises(SecretInWrongFieldError) as bad:
        in_flow(lambda: read_tasks.task_snapshot(world.devnet.key("client"), network="net"))
    assert bad.value.field == "task_address"


# ---- the Vault ----


def test_vault_tasks_move_funds_between_the_buckets(world: World) -> None:
    me, other = world.address("client2"), world.address("client")
    kw = {"network": "net", "wallet": "client2"}

    def balances() -> VaultSnapshot:
        return vault.vault_balances(me, network="net")

    start = in_flow(balances)
    assert (start.account, start.lockup, start.unbonding, start.unbonding_matures_at) == (me, 0, 0, None)

    def moves() -> list[str]:
        return [
            vault.deposit_to_vault(3 * ETHER, **kw),
            vault.deposit_to_vault(ETHER, **kw, account=other),
            vault.withdraw_from_vault(ETHER, **kw),
            vault.lock_stake(5 * ETHER, **kw),
            vault.unbond_stake(2 * ETHER, **kw),
        ]

    other_before = world.chain.vault.balance_of(other)
    hashes = in_flow(moves)
    assert len(set(hashes)) == 5 and all(h.startswith("0x") for h in hashes)
    after = in_flow(balances)
    assert after.balance == start.balance + 3 * ETHER - ETHER - 5 * ETHER
    assert (after.lockup, after.unbonding) == (3 * ETHER, 2 * ETHER)
    assert after.unbonding_matures_at is not None and after.unbonding_matures_at > world.chain.timestamp()
    assert after.eligible and after.wallet < start.wallet - 2 * ETHER
    assert world.chain.vault.balance_of(other) == other_before + ETHER, "deposited to `account`"

    # Not yet: the Vault's refusal comes from the gas estimate, before anything is sent.
    world.refused("client2", [(lambda: vault.claim_unbonded(**kw), UnbondingPeriodNotElapsedError, None)])
    in_flow(lambda: vault.cancel_unbonding(**kw))
    cancelled = in_flow(balances)
    assert (cancelled.lockup, cancelled.unbonding, cancelled.unbonding_matures_at) == (5 * ETHER, 0, None)

    in_flow(lambda: vault.unbond_stake(ETHER, **kw))
    advance(world.devnet, world.chain.vault.UNBONDING_PERIOD() + 1)
    in_flow(lambda: vault.claim_unbonded(**kw))
    claimed = in_flow(balances)
    assert (claimed.lockup, claimed.unbonding, claimed.balance) == (4 * ETHER, 0, cancelled.balance + ETHER)


def test_vault_tasks_refuse_bad_input_before_any_transaction(world: World) -> None:
    kw = {"network": "net", "wallet": "client2"}
    balance = world.chain.vault.balance_of(world.address("client2"))
    wallet = world.chain.balance(world.address("client2"))
    key = world.devnet.key("client")
    cases: list[tuple[Callable[[], Any], type[Exception], str]] = [
        (lambda: vault.withdraw_from_vault(balance + 1, **kw), InvalidInputError, "amount"),
        (lambda: vault.lock_stake(balance + 1, **kw), InvalidInputError, "amount"),
        (lambda: vault.unbond_stake(1, **kw), InvalidInputError, "amount"),  # nothing locked
        (lambda: vault.deposit_to_vault(wallet + 1, **kw), InvalidInputError, "amount"),
        (lambda: vault.deposit_to_vault(0, **kw), InvalidInputError, "amount"),
        (lambda: vault.lock_stake(1.5, **kw), InvalidInputError, "amount"),
        (lambda: vault.deposit_to_vault(1, **kw, account=key), SecretInWrongFieldError, "account"),
        (lambda: vault.withdraw_from_vault(1, network="net", wallet=key), SecretInWrongFieldError, "wallet"),
        (lambda: vault.vault_balances("0x12", network="net"), InvalidInputError, "account"),
    ]
    world.refused("client2", cases)
    with pytest.raises(InvalidInputError) as bad:
        in_flow(lambda: vault.cancel_unbonding(network="no-such-net", wallet="client2"))
    assert bad.value.field == "network"


# ---- agents and pairing ----


def test_agent_tasks_pair_a_master_and_a_provider_and_set_and_unset_an_agent(world: World) -> None:
    master, provider, agent = world.address("master"), world.address("provider1"), world.address("agent")
    lockup = world.chain.vault.lockup_of(provider)

    def pair() -> tuple[bool, bool, str]:
        agent_tasks.announce_provider(provider, network="net", wallet="master", amount=2 * ETHER)
        agent_tasks.announce_master(master, network="net", wallet="provider1")
        before = agent_tasks.is_agent_of(master, agent, network="net")
        agent_tasks.set_agent(agent, network="net", wallet="master")
        return (
            before,
            agent_tasks.is_agent_of(master, agent, network="net"),
            agent_tasks.acting_role(provider, agent, network="net"),
        )

    assert in_flow(pair) == (False, True, "agent")
    terminal = world.chain.terminal
    assert (terminal.master_of(provider), terminal.provider_of(master)) == (master, provider)
    assert world.chain.vault.lockup_of(provider) == lockup + 2 * ETHER, "the announcement's amount is locked"
    assert in_flow(lambda: agent_tasks.acting_role(provider, master, network="net")) == "master"

    in_flow(lambda: agent_tasks.unset_agent(agent, network="net", wallet="master"))
    assert not terminal.is_agent_of(master, agent)
    with pytest.raises(NotAgentError) as gone:
        in_flow(lambda: agent_tasks.acting_role(provider, agent, network="net"))
    assert gone.value.field == "provider" and "not an agent of its master" in str(gone.value)


def test_agent_tasks_refuse_what_the_terminal_would_before_any_transaction(world: World) -> None:
    master, provider = world.address("master"), world.address("provider1")
    in_flow(lambda: agent_tasks.announce_provider(provider, network="net", wallet="master"))
    wallet = world.chain.balance(world.address("client2"))
    agent, key = world.address("agent"), world.devnet.key("agent")
    world.refused(
        "master",
        [
            (lambda: agent_tasks.set_agent(master, network="net", wallet="master"), InvalidInputError, "agent"),
            (
                lambda: agent_tasks.set_agent(agent, network="net", wallet="master", value="yes"),
                InvalidInputError,
                "value",
            ),
            (lambda: agent_tasks.set_agent(key, network="net", wallet="master"), SecretInWrongFieldError, "agent"),
        ],
    )
    world.refused(  # announced already: a retry would lock the amount again
        "master",
        [
            (
                lambda: agent_tasks.announce_provider(provider, network="net", wallet="master", amount=ETHER),
                InvalidInputError,
                "provider",
            )
        ],
    )
    world.refused(
        "provider2",
        [(lambda: agent_tasks.announce_master(master, network="net", wallet="provider2"), InvalidInputError, "master")],
    )
    world.refused(
        "client2",
        [
            (
                lambda: agent_tasks.announce_provider(
                    world.address("provider2"), network="net", wallet="client2", amount=wallet + 1
                ),
                InvalidInputError,
                "amount",
            )
        ],
    )
    in_flow(lambda: agent_tasks.announce_master(master, network="net", wallet="provider1"))
    world.refused(  # paired now: a provider cannot name agents, nor be announced again
        "provider1",
        [(lambda: agent_tasks.set_agent(agent, network="net", wallet="provider1"), InvalidInputError, "wallet")],
    )
    world.refused(
        "client2",
        [
            (
                lambda: agent_tasks.announce_provider(provider, network="net", wallet="client2"),
                InvalidInputError,
                "provider",
            )
        ],
    )
