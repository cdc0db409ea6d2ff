"""Escalation for unserved tasks, on the devnet under Prefect's test harness: a provider that takes
only tasks paying enough (a stand-in provider, tests/provider_sim.py: real transactions) leaves the
first round's tasks untaken; they expire, and the next round publishes them at the escalated
payment, which the policy's cap and the batch's budget both bound (read back from the tasks on
chain). Each raise is in the flow's log. Bad escalation parameters are refused before any
transaction."""

from __future__ import annotations

import pytest

from ogpu_prefect.chain.connection import Chain
from ogpu_prefect.chain.errors import InvalidInputError
from ogpu_prefect.chain.types import DeliveryMethod

from .test_batch_estimate import run_logs  # noqa: F401  (the fixture)
from .test_run_batch import make_source, run, start_providers

pytestmark = pytest.mark.usefixtures("prefect_harness")
PAY = 10**16


def _escalated_batch(env, watch, threshold: int, **kwargs):
    devnet = env[0]
    chain = Chain(devnet.network)
    source = make_source(env, DeliveryMethod.FIRST_RESPONSE)
    sims = start_providers(
        env,
        source,
        ("provider1",),
        provider1={"take": lambda t: Chain(devnet.network).task(t).get_payment() >= threshold},
    )
    client = devnet.address("client")
    balance0 = chain.vault.balance_of(client)
    lines = watch()
    try:
        results = run(
            env,
            source,
            [{"i": 0}, {"i": 1}],
            payment=PAY,
            task_timeout=12,
            max_republish=2,
            escalation="escalate",
            **kwargs,
        ).result()
    finally:
        for s in sims:
            s.stop()
    assert all(r.status == "finalized" and r.republished == 1 and len(r.tasks) == 2 for r in results), (
        results,
        sims[0].errors,
    )
    first, second = zip(*(r.tasks for r in results))
    assert [chain.task(t).get_payment() for t in first] == [PAY, PAY], "round 0 at the batch's payment"
    paid = [chain.task(t).get_payment() for t in second]
    assert chain.vault.frozen_payment(client) == 0, "no escrow left"
    assert chain.vault.balance_of(client) == balance0 - sum(r.payment for r in results)
    raises = [m for level, m in lines if "raises the payment" in m]
    assert len(raises) == 1 and "round 1" in raises[0], lines
    return paid


def test_escalation_raises_the_payment_of_untaken_tasks_up_to_the_cap(env, run_logs) -> None:  # noqa: F811
    _warm(env)
    paid = _escalated_batch(
        env, run_logs, threshold=15 * PAY // 10, budget="1 OGPU", escalation_options={"factor": 3, "cap": "0.016 OGPU"}
    )
    assert paid == [16 * PAY // 10] * 2, "x3 would be 0.03 OGPU: the cap holds it at 0.016"


def test_escalation_stays_within_the_budget(env, run_logs) -> None:  # noqa: F811
    _warm(env)
    paid = _escalated_batch(
        env, run_logs, threshold=15 * PAY // 10, budget="0.03 OGPU", escalation_options={"factor": 3}
    )
    assert paid == [15 * PAY // 10] * 2, "x3 would hold 0.06 OGPU: the budget of 0.03 leaves 0.015 a task"
    assert sum(paid) <= 3 * PAY


def _warm(env) -> None:
    """Bad escalation parameters fail before any transaction (this also runs the process' first
    flow, which configures Prefect's logging before the test's log handler is added)."""
    devnet = env[0]
    chain = Chain(devnet.network)
    client = devnet.address("client")
    source = make_source(env, DeliveryMethod.FIRST_RESPONSE)
    nonce = chain.rpc.call("eth_getTransactionCount", [client, "latest"])
    for kwargs, field in [
        ({"escalation": "nope"}, "escalation"),
        ({"escalation": "escalate", "escalation_options": {"cap": "0.001 OGPU"}}, "escalation_options.cap"),
        ({"escalation": "escalate", "escalation_options": {"factor": 0.5}}, "escalation_options.factor"),
        ({"escalation": "escalate", "escalation_options": {"speed": 2}}, "escalation_options.speed"),
        ({"escalation": "escalate", "escalation_options": {"factor": 2}}, "escalation_options.cap"),  # unbounded
    ]:
        with pytest.raises(InvalidInputError) as info:
            run(env, source, [{"i": 0}], payment=PAY, **kwargs).result()
        assert info.value.field == field
    assert chain.rpc.call("eth_getTransactionCount", [client, "latest"]) == nonce, "nothing was sent"
