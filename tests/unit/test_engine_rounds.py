"""The batch engine's rounds (run_batch) and its escrow book, driven through the reliability
scenarios' logic on an honest fake chain (tests/unit/fake_market.py): no anvil, no Prefect.
Every test audits the fake's ledger: every wei in the Vault, an escrow or a provider's pay; no
escrow stranded that the batch did not report as waiting; no config published twice."""

from __future__ import annotations

from typing import Any

import pytest

from ogpu_prefect.chain.errors import BalanceTooLowError, TxRpcError
from ogpu_prefect.chain.types import TaskStatus
from ogpu_prefect.engine import EscrowBook, run_rounds
from ogpu_prefect.engine.rounds import RoundsOutcome, batch_deadline
from ogpu_prefect.escalation import parse_escalation
from ogpu_prefect.escrow import EscrowReport
from ogpu_prefect.publishing import PartialPublishError

from .fake_market import Act, FakeClock, FakeLedger, FakeMarket, items, rounds_ports

PAY = 10**16
TIMEOUT = 60


def batch(
    market: FakeMarket,
    n: int,
    *,
    key: str = "b1",
    max_republish: int = 1,
    budget: int | None = None,
    payment: int = PAY,
    ledger: FakeLedger | None = None,
    **kw: Any,
) -> tuple[RoundsOutcome, FakeLedger]:
    ledger = ledger or FakeLedger(market)
    publish, wait = rounds_ports(market, key, items(n))
    deadline = batch_deadline(market.clock.t, TIMEOUT, max_republish, kw.pop("batch_deadline", None))
    out = run_rounds(
        n,
        payment,
        task_timeout=TIMEOUT,
        max_republish=max_republish,
        budget=budget,
        deadline=deadline,
        publish=publish,
        wait=wait,
        ledger=ledger,
        clock=market.clock,
        **kw,
    )
    return out, ledger


def audited(market: FakeMarket, out: RoundsOutcome | None = None) -> None:
    waiting = [t for r in out.results for t in r.open_escrow] if out is not None else []
    assert market.balanced(), "wei appeared or vanished"
    assert market.stranded(waiting) == 0, "escrow stranded"
    assert market.duplicates() == 0, "a config published twice"


def market(script: Any = None, **kw: Any) -> FakeMarket:
    return FakeMarket(FakeClock(), script=script or (lambda i, a: Act()), **kw)


# ---- the escrow book ----


def test_the_book_counts_each_task_once_at_its_own_payment_and_releases_it_once() -> None:
    book = EscrowBook(budget=10)
    book.published(["a", "b"], 3)
    book.published(["b", "c"], 4)  # b reused: counted once
    assert (book.held, book.held_peak, book.room(2)) == (10, 10, 0)
    book.release(["a", "a"])
    assert (book.held, book.room(3), book.room(4)) == (7, 1, 0)


def test_the_book_holds_back_what_settling_could_not_return_until_a_later_settling_does() -> None:
    book = EscrowBook()
    book.published(["new", "attempted", "down"], 5)
    released = book.account(EscrowReport(cancelled=["new"], waiting={"attempted": 70}, unreadable=["down"]))
    assert released == ["new"] and book.held == 10
    assert book.held_back == {"attempted": 70, "down": 0} and book.unreadable == {"down"}
    assert book.due(69) == ["down"] and sorted(book.due(70)) == ["attempted", "down"]
    book.account(EscrowReport(reclaimed=["attempted"], cancelled=["down"]))
    assert (book.held, book.held_back, book.unreadable) == (0, {}, set())
    assert book.room(5) is None, "no budget: no ceiling"


def test_the_room_is_exact_at_the_budget_and_one_wei_under_takes_one_fewer() -> None:
    book = EscrowBook(budget=3 * PAY)
    assert book.room(PAY) == 3
    assert EscrowBook(budget=3 * PAY - 1).room(PAY) == 2
    book.published(["a"], PAY + 1)
    assert book.room(PAY) == 1


# ---- rounds ----


def test_every_input_answered_in_one_round_is_paid_once_in_input_order() -> None:
    m = market()
    out, ledger = batch(m, 5)
    assert [r.index for r in out.results] == list(range(5))
    assert {r.status for r in out.results} == {"finalized"} and out.stopped is None
    assert m.paid == 5 * PAY and out.book.held == 0 and m.escrow_held() == 0
    assert len(ledger.tasks) == 5 and m.publish_calls == 1
    audited(m, out)


def test_untaken_tasks_are_cancelled_and_republished_as_new_tasks() -> None:
    m = market(lambda i, a: Act("untaken") if a == 0 and i % 2 else Act())
    out, _ = batch(m, 4)
    assert {r.status for r in out.results} == {"finalized"}
    assert [len(r.tasks) for r in out.results] == [1, 2, 1, 2]
    assert [r.republished for r in out.results] == [0, 1, 0, 1]
    cancelled = [t for t in m.tasks.values() if t.status is TaskStatus.CANCELED]
    assert len(cancelled) == 2 and m.paid == 4 * PAY
    audited(m, out)


def test_inputs_that_never_get_a_result_end_expired_with_their_escrow_back() -> None:
    m = market(lambda i, a: Act("untaken"))
    out, _ = batch(m, 3, max_republish=2)
    assert {r.status for r in out.results} == {"expired"} and [len(r.tasks) for r in out.results] == [3, 3, 3]
    assert m.vault == m.initial and out.book.held == 0
    audited(m, out)


def test_attempted_tasks_that_expire_are_reclaimed_where_the_deployment_can() -> None:
    m = market(lambda i, a: Act("vanish") if a == 0 else Act())
    out, _ = batch(m, 2)
    assert {r.status for r in out.results} == {"finalized"}
    assert len(out.escrow.reclaimed) == 2 and m.paid == 2 * PAY
    audited(m, out)


def test_on_the_real_network_an_attempted_expired_task_is_reported_waiting_and_still_counts() -> None:
    m = market(lambda i, a: Act("vanish"), extensions=False)
    out, _ = batch(m, 2, max_republish=1, budget=3 * PAY)
    # round 1 fits one input only: the first round's escrow is still held (waiting)
    assert [r.status for r in out.results] == ["expired", "over_budget"]
    assert len(out.results[0].open_escrow) == 2 and len(out.results[1].open_escrow) == 1
    assert out.book.held == 3 * PAY <= 3 * PAY and m.peak_escrow <= 3 * PAY
    audited(m, out)  # every held wei is reported as waiting


def test_a_budget_exactly_at_the_first_round_fits_and_republishing_reuses_returned_escrow() -> None:
    m = market(lambda i, a: Act("untaken") if a == 0 else Act())
    out, _ = batch(m, 4, budget=4 * PAY)
    assert {r.status for r in out.results} == {"finalized"} and m.peak_escrow == 4 * PAY
    audited(m, out)


def test_a_budget_one_wei_short_of_a_round_leaves_the_last_input_over_budget() -> None:
    m = market(lambda i, a: Act("vanish", after=1) if a == 0 else Act(), extensions=False)
    out, _ = batch(m, 2, budget=3 * PAY - 1, max_republish=1)
    # 2 held (waiting), 1 wei short of 3: round 1 publishes none
    assert [r.status for r in out.results] == ["over_budget", "over_budget"]
    assert "exceed the budget" in str(out.results[0].error) and m.peak_escrow == 2 * PAY
    audited(m, out)


def test_escalation_raises_the_payment_of_untaken_inputs_within_the_budget() -> None:
    m = market(lambda i, a: Act("untaken") if a == 0 else Act())
    policy = parse_escalation("escalate", {"factor": 3, "cap": f"{10 * PAY} wei"}, PAY)
    out, _ = batch(m, 2, budget=5 * PAY, escalator=policy)
    payments = sorted(t.payment for t in m.tasks.values())
    assert payments == [PAY, PAY, 5 * PAY // 2, 5 * PAY // 2], "3x capped by the budget for both inputs"
    assert {r.status for r in out.results} == {"finalized"} and m.peak_escrow <= 5 * PAY
    audited(m, out)


def test_escalation_does_not_raise_for_inputs_that_were_taken_and_failed() -> None:
    m = market(lambda i, a: Act("vanish") if a == 0 else Act())
    policy = parse_escalation("escalate", {"factor": 2, "cap": f"{4 * PAY} wei"}, PAY)
    out, _ = batch(m, 2, escalator=policy)
    assert {t.payment for t in m.tasks.values()} == {PAY}
    audited(m, out)


def test_a_first_round_that_failed_one_visible_way_stops_without_republishing() -> None:
    m = market(lambda i, a: Act("error", error="provider error: no such function 'echo'"))
    out, _ = batch(m, 3, max_republish=3)
    assert out.stopped == "provider error: no such function 'echo'"
    assert len(m.tasks) == 3, "nothing re-published"
    assert len(out.escrow.waiting) == 3, "attempted, before their expiry: held, and reported"
    assert all(r.open_escrow for r in out.results)
    audited(m, out)


def test_refused_results_everywhere_stop_the_batch_too() -> None:
    m = market(lambda i, a: Act("reject"), extensions=False)
    out, _ = batch(m, 2, max_republish=2)
    assert out.stopped is not None and len(m.tasks) == 2
    assert all(r.open_escrow for r in out.results), "attempted: waiting for the network, and said so"
    audited(m, out)


def test_mixed_failures_are_republished_and_a_batch_with_results_goes_on() -> None:
    errors = {0: Act("error", error="oom"), 1: Act("error", error="no such function")}
    m = market(lambda i, a: errors.get(i, Act()) if a == 0 else Act())
    out, _ = batch(m, 3)
    assert out.stopped is None and {r.status for r in out.results} == {"finalized"}
    audited(m, out)


def test_a_retry_after_a_partial_publish_finds_the_landed_tasks_and_publishes_the_rest() -> None:
    m = market(fail_publish_after=3)
    ledger = FakeLedger(m)
    with pytest.raises(PartialPublishError) as info:
        batch(m, 6, ledger=ledger)
    assert len(info.value.published) == 3 and len(ledger.tasks) == 3, "what landed is in the ledger"
    m.fail_publish_after = None
    out, _ = batch(m, 6)  # the flow's retry: same batch_key
    assert {r.status for r in out.results} == {"finalized"} and len(m.tasks) == 6
    audited(m, out)


def test_a_crash_mid_publish_then_a_run_with_the_same_key_publishes_nothing_twice() -> None:
    m = market(fail_publish_after=2)
    with pytest.raises(PartialPublishError):
        batch(m, 5, key="crashy")
    # the process died: its ledger is lost; the new run reads the chain
    m.fail_publish_after = None
    out, _ = batch(m, 5, key="crashy")
    assert len(m.tasks) == 5 and m.paid == 5 * PAY
    audited(m, out)


def test_a_rerun_of_a_finished_batch_returns_its_results_and_spends_nothing() -> None:
    m = market()
    first, _ = batch(m, 4, key="done")
    vault, paid = m.vault, m.paid
    again, _ = batch(m, 4, key="done")
    assert [r.task for r in again.results] == [r.task for r in first.results]
    assert (m.vault, m.paid, len(m.tasks)) == (vault, paid, 4)
    audited(m, again)


def test_a_failure_mid_batch_leaves_a_ledger_whose_settling_returns_every_escrow() -> None:
    m = market(lambda i, a: Act("untaken"))
    ledger = FakeLedger(m)
    publish, _ = rounds_ports(m, "boom", items(4))

    def wait(*args: Any) -> Any:
        raise TxRpcError("the node went away while waiting")

    with pytest.raises(TxRpcError):
        run_rounds(
            4,
            PAY,
            task_timeout=TIMEOUT,
            max_republish=1,
            budget=None,
            deadline=m.clock.t + 1000,
            publish=publish,
            wait=wait,
            ledger=ledger,
            clock=m.clock,
        )
    report = ledger.settle()  # what the flow's on_failure / on_cancellation hook does
    assert len(report.cancelled) == 4 and m.vault == m.initial
    audited(m)


def test_an_unreachable_node_while_settling_is_reported_and_a_later_settling_finishes() -> None:
    m = market(lambda i, a: Act("untaken"))
    ledger = FakeLedger(m)
    m.cancel_reverts = 2  # attempted while we cancelled: read again later
    out, _ = batch(m, 2, max_republish=0, ledger=ledger)
    assert len(out.escrow.unreadable) == 2 and out.book.held == 2 * PAY
    assert m.stranded() == 2 * PAY, "held: the flow raises BatchIncompleteError naming them"
    assert len(ledger.settle().cancelled) == 2  # a run with the same batch_key
    audited(m)


def test_a_deadline_shorter_than_the_tasks_ends_what_it_could_not_finish() -> None:
    m = market(lambda i, a: Act("untaken"))
    out, _ = batch(m, 3, max_republish=3, batch_deadline=40)
    assert {r.status for r in out.results} == {"expired"}
    assert all(len(r.tasks) == 1 for r in out.results), "no round after the deadline"
    audited(m, out)


def test_a_refused_first_publication_holds_nothing() -> None:
    m = market(vault=PAY)
    with pytest.raises(BalanceTooLowError):
        batch(m, 2)
    assert m.tasks == {} and m.vault == m.initial


def test_manual_confirmation_pays_the_chosen_price_and_returns_the_rest() -> None:
    m = market(lambda i, a: Act("answer", price=PAY // 4))
    out, _ = batch(m, 3)
    assert m.paid == 3 * PAY // 4 and m.vault == m.initial - 3 * PAY // 4
    assert out.book.held == 0 and [r.payment for r in out.results] == [PAY // 4] * 3
    audited(m, out)
