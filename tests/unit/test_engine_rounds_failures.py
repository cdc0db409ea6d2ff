"""The batch engine's window in rounds mode (run_batch) when something fails: a publication
stopped part-way, a crash, a retry or a re-run with the same batch_key, a wait that fails, a node
that cannot settle. On the honest fake chain (tests/unit/fake_market.py), audited like
test_engine_rounds.py: what landed is in the ledger, nothing is published twice, no escrow is
left held unreported."""

from __future__ import annotations

from typing import Any

import pytest

from ogpu_prefect.chain.errors import BalanceTooLowError, TxRpcError
from ogpu_prefect.publishing import PartialPublishError

from .fake_market import Act, FakeLedger
from .test_engine_rounds import PAY, TRACKERS, audited, batch, market


@pytest.mark.parametrize("tracker", TRACKERS)
def test_a_retry_after_a_partial_publish_finds_the_landed_tasks_and_publishes_the_rest(tracker: str) -> None:
    m = market(fail_publish_after=3)
    ledger = FakeLedger(m)
    with pytest.raises(PartialPublishError) as info:
        batch(m, 6, ledger=ledger, tracker=tracker)
    assert len(info.value.published) == 3 and len(ledger.tasks) == 3, "what landed is in the ledger"
    m.fail_publish_after = None
    out, _ = batch(m, 6, tracker=tracker)  # the flow's retry: same batch_key
    assert {r.status for r in out.results} == {"finalized"} and len(m.tasks) == 6
    audited(m, out)


def test_a_partial_publish_of_a_later_round_puts_what_landed_in_the_ledger() -> None:
    m = market(lambda i, a: Act("untaken") if a == 0 else Act())
    ledger = FakeLedger(m)
    real = m.publish

    def fails_in_round_1(*args: Any, **kw: Any) -> Any:
        if m.publish_calls == 1:
            m.fail_publish_after = 1
        return real(*args, **kw)

    m.publish = fails_in_round_1  # type: ignore[method-assign]
    with pytest.raises(PartialPublishError):
        batch(m, 3, ledger=ledger)
    assert len(m.tasks) == 4 and len(ledger.tasks) == 1, "round 0 cancelled and dropped, round 1's one in"
    assert len(ledger.settle().cancelled) == 1 and m.vault == m.initial  # the exit hook
    audited(m)


def test_a_crash_mid_publish_then_a_run_with_the_same_key_publishes_nothing_twice() -> None:
    m = market(fail_publish_after=2)
    with pytest.raises(PartialPublishError):
        batch(m, 5, key="crashy")
    # the process died: its ledger is lost; the new run reads the chain
    m.fail_publish_after = None
    out, _ = batch(m, 5, key="crashy")
    assert len(m.tasks) == 5 and m.paid == 5 * PAY
    audited(m, out)


@pytest.mark.parametrize("tracker", TRACKERS)
def test_a_rerun_of_a_finished_batch_returns_its_results_and_spends_nothing(tracker: str) -> None:
    m = market()
    first, _ = batch(m, 4, key="done", tracker=tracker)
    vault, paid = m.vault, m.paid
    again, _ = batch(m, 4, key="done", tracker=tracker)
    assert [r.task for r in again.results] == [r.task for r in first.results]
    assert (m.vault, m.paid, len(m.tasks)) == (vault, paid, 4)
    audited(m, again)


def test_a_failure_mid_batch_leaves_a_ledger_whose_settling_returns_every_escrow() -> None:
    m = market(lambda i, a: Act("untaken"))
    ledger = FakeLedger(m)

    def wait(*args: Any) -> Any:
        raise TxRpcError("the node went away while waiting")

    with pytest.raises(TxRpcError):
        batch(m, 4, key="boom", ledger=ledger, wait=wait)
    report = ledger.settle()  # what the flow's on_failure / on_cancellation hook does
    assert len(report.cancelled) == 4 and m.vault == m.initial
    audited(m)


def test_an_unreachable_node_while_settling_is_settled_again_within_the_run() -> None:
    m = market(lambda i, a: Act("untaken"))
    m.cancel_reverts = 2  # attempted while we cancelled: read again later
    out, ledger = batch(m, 2, max_republish=0)
    assert out.escrow.unreadable == [] and out.book.held == 0 and m.vault == m.initial
    assert len(out.book.escrow.unreadable) == 2, "the first settling could not"
    audited(m, out)


def test_a_node_unreachable_to_the_end_is_reported_and_a_later_settling_finishes() -> None:
    m = market(lambda i, a: Act("untaken"))
    ledger = FakeLedger(m)
    m.cancel_reverts = 100  # the node never lets a cancel through during the run
    out, _ = batch(m, 2, max_republish=0, ledger=ledger)
    assert len(out.escrow.unreadable) == 2 and out.book.held == 2 * PAY
    assert all(r.open_escrow for r in out.results)
    assert m.stranded() == 2 * PAY, "held: the flow raises BatchIncompleteError naming them"
    m.cancel_reverts = 0
    assert len(ledger.settle().cancelled) == 2  # a run with the same batch_key
    audited(m)


def test_a_refused_first_publication_holds_nothing() -> None:
    m = market(vault=PAY)
    with pytest.raises(BalanceTooLowError):
        batch(m, 2)
    assert m.tasks == {} and m.vault == m.initial
