"""Provider reputation end to end: the devnet, Prefect's test harness (records are Prefect
Variables), stand-in providers sending real transactions (tests/reputation_scenario.py). A
provider that answers wrong and first is banned after k refusals, its later responses are
ignored, the inputs only it answered are re-published, and every result comes from the honest
provider; the ban holds in the next batch and is forgiven after `forgive_s`. Consensus records
the disagreeing provider."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ogpu_prefect.chain.types import DeliveryMethod
from ogpu_prefect.storage import LocalStore

from .reputation_scenario import HONEST, WRONG, clear_records, market, record, stored
from .scenarios import PAYMENT, Ctx, run_flow

pytestmark = pytest.mark.usefixtures("prefect_harness")

K = 2
FORGIVE_S = 30


@pytest.fixture
def ctx(devnet, tmp_path: Path) -> Iterator[Ctx]:
    clear_records()
    with LocalStore(tmp_path / "payloads") as store:
        # A wallet no other test uses: records are per wallet, and a book of another test's flow
        # still running (a timed-out task's thread) writes the "client" wallet's records.
        yield Ctx(devnet, store, tmp_path, client_role="client2")
    clear_records()  # the next test's providers have the same addresses


def test_a_wrong_provider_is_banned_and_the_batches_complete_through_the_honest_one(ctx: Ctx) -> None:
    options = {"k": K, "forgive_s": FORGIVE_S, "reject_grace_s": 20}
    honest, wrong = ctx.devnet.address(HONEST), ctx.devnet.address(WRONG)
    inputs = [{"i": i} for i in range(8)]
    with market(ctx, skip=3) as m:
        results, first = m.batch(8, options=options)
        print("first batch:", first.line())
        assert all(r.status == "finalized" and r.provider == honest for r in results), results
        assert [r.result["result"] for r in results] == inputs
        assert all(r.republished >= 1 and len(r.tasks) >= 2 for r in results[:3]), "only the wrong one answered"
        banned = record(ctx, WRONG)
        assert banned.rejections == {"validator": K} and banned.bans == 1 and banned.accepted == 0
        assert banned.banned_until is not None and banned.banned_until > time.time()
        assert record(ctx, HONEST).accepted == 8
        assert stored(ctx, WRONG)["rejections"] == {"validator": K}, "a Prefect Variable anyone can read"
        # Refused tasks hold their escrow until expiry (RESPONDED: not cancellable); the batch says so.
        waiting = {t for r in results for t in r.open_escrow}
        assert waiting and all(t != r.task for r in results for t in r.open_escrow)
        assert ctx.chain.vault.frozen_payment(ctx.devnet.address(ctx.client_role)) == PAYMENT * len(waiting)

        answered = len(m.sims[0].submitted)
        results, second = m.batch(4, options=options)
        print("second batch:", second.line())
        assert time.time() < banned.banned_until, f"the test is too slow for forgive_s={FORGIVE_S}"
        assert all(r.status == "finalized" and r.provider == honest for r in results)
        assert all(r.republished == 0 for r in results), "the banned provider's responses are ignored"
        assert second.rejections == {} and second.bans == 0, "a ban is not extended by what it hides"
        assert len(m.sims[0].submitted) - answered == 4, "it answered every task first, and was ignored"

        m.state["wrong"] = False  # it mends its ways; forgiveness comes with time
        time.sleep(max(0.0, banned.banned_until - time.time()) + 0.5)
        results, third = m.batch(6, options=options)  # six chances: on a loaded machine the honest one may win a few
        print("third batch:", third.line())
    assert all(r.status == "finalized" for r in results)
    assert any(r.provider == wrong for r in results), "forgiven: the fast one wins again"
    forgiven = record(ctx, WRONG)
    assert forgiven.strikes == 0 and forgiven.banned_until is None and forgiven.accepted >= 1
    assert forgiven.rejections == {"validator": K}, "the history stays"


def test_consensus_records_the_disagreeing_provider(ctx: Ctx) -> None:
    source = ctx.source(DeliveryMethod.MANUAL_CONFIRMATION)
    honest = {"delay": 0.5}
    wrong = {"answer": lambda config: {"result": "wrong"}}
    with ctx.providers(
        source, ("provider1", "provider2", "provider3"), provider1=honest, provider3=honest, provider2=wrong
    ):
        results = run_flow(
            ctx, source, 4, delivery="consensus", delivery_options={"k": 2}, reputation_options={"k": 10}
        ).result()
    assert all(r.status == "finalized" for r in results) and [r.result["result"] for r in results] == [
        {"i": i} for i in range(4)
    ]
    assert {r.provider for r in results} <= {ctx.devnet.address("provider1"), ctx.devnet.address("provider3")}
    disagreeing = record(ctx, "provider2")
    assert disagreeing.rejections == {"disagreement": 4} and disagreeing.bans == 0
    assert record(ctx, "provider1").accepted + record(ctx, "provider3").accepted == 4


def test_reputation_off_records_nothing(ctx: Ctx) -> None:
    source = ctx.source(DeliveryMethod.MANUAL_CONFIRMATION)
    with ctx.providers(source, ("provider1",)):
        results = run_flow(ctx, source, 2, delivery="manual", reputation="off").result()
    assert all(r.status == "finalized" for r in results)
    assert stored(ctx, "provider1") is None


def test_a_forged_ban_of_the_honest_provider_does_not_fail_a_manual_batch(ctx: Ctx) -> None:
    """One Variable write (`banned_until: 2099`) by anyone with API access made a MANUAL batch fail
    ("every response was refused") with its escrow held until expiry. The record is not sealed by
    the client's wallet: ignored and reported; the batch completes, no escrow held, no key leaked."""
    from .scenarios_keys import forged_reputation

    outcome = forged_reputation(ctx, 3)
    assert outcome.passed, (outcome.detail, outcome.problems, outcome.stranded_wei, outcome.leaked_keys)
