"""An `ogpu-provider` worker run by an agent of a master, for the master's provider (PROTOCOL.md
5.1): a real `prefect worker start` process whose pool's wallet is the agent's key and whose
`providers` names the master's provider. It registers, attempts and answers for that provider
(every transaction signed by the agent), the provider is paid; once the master unsets the agent,
the worker attempts nothing and says why in one line, and a new worker stops at start with one
line naming `providers`."""

from __future__ import annotations

import time
from typing import Any

import pytest

from ogpu_prefect.agents import announce_master, announce_provider, set_agent
from ogpu_prefect.chain.types import TaskStatus

from . import test_worker
from .test_worker import PAY, Fleet, flow_runs_of, reap, service_processes

fleet = test_worker.fleet  # the fixture: a pool's blocks and its worker processes

pytestmark = pytest.mark.usefixtures("prefect_harness")


def sender_of(fleet: Fleet, tx_hash: str) -> str:
    return str(fleet.chain.rpc.call("eth_getTransactionByHash", [tx_hash])["from"]).lower()


def test_an_agent_worker_serves_its_masters_provider_which_is_paid(fleet: Fleet) -> None:
    chain, devnet = fleet.chain, fleet.devnet
    master, provider, agent = devnet.address("master"), devnet.address("provider1"), devnet.address("agent")
    announce_provider(chain, devnet.key("master"), provider)
    announce_master(chain, devnet.key("provider1"), master)
    set_agent(chain, devnet.key("master"), agent)
    source = fleet.publish_source()
    fleet.create_pool("gpus-agent", [source], wallet_block=f"{fleet.name}-agent", providers=[provider])
    start = chain.block_number() + 1
    try:
        fleet.start_worker("gpus-agent", "agent")
        fleet.wait_registered(source, "agent", address=provider)
        vault = chain.vault
        before = {a: (vault.balance_of(a), vault.total_earnings_of(a)) for a in (provider, agent, master)}
        tasks = [p.address for p in fleet.publish(source, [{"text": "for the master"}, {"text": "again"}])]
        fleet.wait_final(tasks)

        # The contracts pay the provider the response names: the master's provider, not the agent.
        assert vault.total_earnings_of(provider) - before[provider][1] == 2 * PAY
        assert vault.balance_of(provider) - before[provider][0] == 2 * PAY
        for a in (agent, master):
            assert (vault.balance_of(a), vault.total_earnings_of(a)) == before[a], "paid to the provider only"
        assert {chain.task(t).winning_provider() for t in tasks} == {provider}
        # Every transaction of the provider's was signed by the agent (the provider's key is not here).
        events = chain.cursor(["Registered", "Attempted", "ResponseSubmitted"], start).poll()
        assert {e.name for e in events} == {"Registered", "Attempted", "ResponseSubmitted"}
        assert {sender_of(fleet, e.tx_hash) for e in events} == {agent.lower()}
        assert all(e["provider"] == provider for e in events if e.name != "ResponseSubmitted")
        assert service_processes(provider), "its services carry the provider's name, not the agent's"
        deadline = time.time() + 30
        while len(runs := flow_runs_of("gpus-agent")) < len(tasks) and time.time() < deadline:
            time.sleep(0.3)  # the journal creates a task's flow run beside its transactions, not before them
        assert sorted(r.parameters["task"] for r in runs) == sorted(tasks)

        # The master unsets the agent: the worker notices (it re-reads its authority every 10 s),
        # says why in one line, and attempts nothing more.
        set_agent(chain, devnet.key("master"), agent, False)
        deadline = time.time() + 60
        while "not taking tasks: providers:" not in fleet.worker_log("agent"):
            assert time.time() < deadline, fleet.worker_log("agent")
            time.sleep(0.3)
        line = next(ln for ln in fleet.worker_log("agent").splitlines() if "not taking tasks" in ln)
        assert f"{agent} may not sign for provider {provider}" in line and "Traceback" not in fleet.worker_log("agent")
        nonce = chain.rpc.call("eth_getTransactionCount", [agent, "pending"])
        later = fleet.publish(source, [{"text": "too late"}])[0].address
        time.sleep(2.0)
        assert chain.task(later).get_status() is TaskStatus.NEW
        assert chain.rpc.call("eth_getTransactionCount", [agent, "pending"]) == nonce, (
            "no transaction by a revoked agent"
        )
        fleet.stop("agent")

        # A worker started with the revoked agent stops at once with one line naming `providers`.
        proc = fleet.start_worker("gpus-agent", "agent")
        assert proc.wait(timeout=120) == 1, fleet.worker_log("agent")
        fleet.procs.pop("agent")
        last = fleet.worker_log("agent").strip().splitlines()[-1]
        assert last.startswith(f"ogpu-provider worker: providers: {agent} may not sign for provider {provider}"), last
        assert "Traceback" not in fleet.worker_log("agent")
    finally:
        reap(provider)  # the services of a worker the fixture kills are the provider's


def test_an_agent_pool_resolves_its_provider_per_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """`providers` lists a master's fleet: the only one serves, several need the machine's choice."""
    from ogpu_prefect.worker.configuration import JobVariableError, ProviderJobConfiguration

    p1, p2, agent = "0x" + "11" * 20, "0x" + "22" * 20, "0x" + "aa" * 20

    def config(providers: list[str]) -> Any:
        return ProviderJobConfiguration(providers=providers)

    monkeypatch.delenv("PREFECT_INTEGRATIONS_OGPU_PROVIDER_ADDRESS", raising=False)
    assert config([]).acting_for(agent) is None, "no providers: the wallet is the provider"
    assert config([p1]).acting_for(agent) == config([p1]).providers[0]
    assert config([agent]).acting_for(agent) is None, "the wallet listed as the provider: no agent"
    with pytest.raises(JobVariableError) as several:
        config([p1, p2]).acting_for(agent)
    assert several.value.field == "providers" and "PREFECT_INTEGRATIONS_OGPU_PROVIDER_ADDRESS" in str(several.value)
    monkeypatch.setenv("PREFECT_INTEGRATIONS_OGPU_PROVIDER_ADDRESS", p2)
    assert str(config([p1, p2]).acting_for(agent)).lower() == p2
    with pytest.raises(JobVariableError) as unlisted:
        config([p1]).acting_for(agent)
    assert unlisted.value.field == "providers" and "does not list" in str(unlisted.value)
    with pytest.raises(Exception) as bad:
        config(["0x12"])
    assert "providers[0]" in str(bad.value)
