"""The batch engine's window in rounds mode (run_batch), driven through the
reliability scenarios' logic on an honest fake chain (tests/unit/fake_market.py): no anvil, no
Prefect. The window gets the ports run_batch gives it (task_ports.py: a publication and a blocking
wait per round, as its Prefect task runs), and most scenarios run again with the streaming flows'
polled tracker, which hands results out as tasks end: a round still ends only once all of it has.
Every test audits the fake's ledger: every wei in the Vault, an escrow or a provider's pay; no
escrow stranded that the batch did not report as waiting; no config published twice."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from ogpu_prefect.chain.types import TaskStatus
from ogpu_prefect.engine import EscrowBook, Limits, Rounds, Window, batch_deadline, in_input_order
from ogpu_prefect.engine.window import batch_marks
from ogpu_prefect.escalation import parse_escalation
from ogpu_prefect.escrow import EscrowReport
from ogpu_prefect.models import TaskResult
from ogpu_prefect.task_ports import RoundTracker, TaskMarket

from .fake_market import Act, FakeClock, FakeLedger, FakeMarket, FakeTracker, items, rounds_ports

PAY = 10**16
TIMEOUT = 60
TRACKERS = ["task runs", "polled"]


@dataclass
class Outcome:
    results: list[TaskResult]
    """One per input, in input order, as run_batch returns them."""
    window: Window

    @property
    def book(self) -> EscrowBook:
        return self.window.book

    @property
    def escrow(self) -> EscrowReport:
        return self.window.book.report()

    @property
    def stopped(self) -> str | None:
        return self.window.stopped


@dataclass
class Runs:
    """What the flow's Prefect task runs would be: one publication and one wait per round."""

    publish: int = 0
    wait: int = 0


def batch(
    market: FakeMarket,
    n: int,
    *,
    key: str = "b1",
    max_republish: int = 1,
    budget: int | None = None,
    payment: int = PAY,
    ledger: FakeLedger | None = None,
    tracker: str = "task runs",
    runs: Runs | None = None,
    wait: Callable[..., list[TaskResult]] | None = None,
    escalator: Any = None,
    logger: logging.Logger | None = None,
    **kw: Any,
) -> tuple[Outcome, FakeLedger]:
    """One run_batch on the fake: its window in rounds mode, the results in input order."""
    ledger = ledger or FakeLedger(market)
    runs = runs if runs is not None else Runs()
    deadline = batch_deadline(market.clock.t, TIMEOUT, max_republish, kw.pop("batch_deadline", None))
    publish, waits = rounds_ports(market, key)
    wait = wait or waits

    def counted_publish(*args: Any) -> Any:
        runs.publish += 1
        return publish(*args)

    def counted_wait(*args: Any) -> Any:
        runs.wait += 1
        return wait(*args)

    trk: Any = (
        FakeTracker(market) if tracker == "polled" else RoundTracker(counted_wait, market.now, deadline, market.clock)
    )
    results: dict[int, TaskResult] = {}

    def emit(r: TaskResult) -> None:
        assert r.index not in results, f"input {r.index} has two results"
        results[r.index] = r

    w = Window(
        TaskMarket(market.now, counted_publish),
        trk,
        ledger,
        Limits(payment, TIMEOUT, n, max_republish, budget, deadline, 0.5),
        emit,
        key=key,
        clock=market.clock,
        rounds=Rounds(escalator, None, logger or logging.getLogger("test.rounds")),
        **kw,
    )
    w.run(iter(enumerate(items(n))))
    return Outcome(in_input_order(n, results, w.held_back), w), ledger


def audited(market: FakeMarket, out: Outcome | None = None) -> None:
    waiting = [t for r in out.results for t in r.open_escrow] if out is not None else []
    assert market.balanced(), "wei appeared or vanished"
    assert market.stranded(waiting) == 0, "escrow stranded"
    assert market.duplicates() == 0, "a config published twice"


def market(script: Any = None, **kw: Any) -> FakeMarket:
    return FakeMarket(FakeClock(), script=script or (lambda i, a: Act()), **kw)


# ---- rounds ----


@pytest.mark.parametrize("tracker", TRACKERS)
def test_every_input_answered_in_one_round_is_paid_once_in_input_order(tracker: str) -> None:
    m, runs = market(), Runs()
    out, ledger = batch(m, 5, tracker=tracker, runs=runs)
    assert [r.index for r in out.results] == list(range(5))
    assert {r.status for r in out.results} == {"finalized"} and out.stopped is None
    assert m.paid == 5 * PAY and out.book.held == 0 and m.escrow_held() == 0
    assert m.publish_calls == 1 and runs.publish == 1
    assert runs.wait == (1 if tracker == "task runs" else 0)
    assert ledger.tasks == [], "paid: nothing left for the exit hook to settle"
    audited(m, out)


@pytest.mark.parametrize("tracker", TRACKERS)
def test_untaken_tasks_are_cancelled_and_republished_as_new_tasks(tracker: str) -> None:
    m, runs = market(lambda i, a: Act("untaken") if a == 0 and i % 2 else Act()), Runs()
    out, _ = batch(m, 4, tracker=tracker, runs=runs)
    assert {r.status for r in out.results} == {"finalized"}
    assert [len(r.tasks) for r in out.results] == [1, 2, 1, 2]
    assert [r.republished for r in out.results] == [0, 1, 0, 1]
    cancelled = [t for t in m.tasks.values() if t.status is TaskStatus.CANCELED]
    assert len(cancelled) == 2 and m.paid == 4 * PAY
    assert runs.publish == 2 and runs.wait == (2 if tracker == "task runs" else 0), "a task run each per round"
    audited(m, out)


def test_a_round_is_republished_only_once_all_of_it_has_ended() -> None:
    # input 0 fails at once, input 1 answers late: with results handed out as tasks end, input 0
    # still waits for its round (the streaming mode would re-publish it at once)
    m = market(lambda i, a: Act("error", after=1, error="oom") if (i, a) == (0, 0) else Act(after=50 if i else 1))
    out, _ = batch(m, 2, tracker="polled", max_republish=1)
    assert [r.status for r in out.results] == ["finalized", "finalized"] and out.results[0].republished == 1
    late = m.tasks[out.results[1].tasks[0]]
    again = m.tasks[out.results[0].tasks[1]]
    assert again.published_at >= late.published_at + 50, "after the round's last task ended"
    audited(m, out)


@pytest.mark.parametrize("tracker", TRACKERS)
def test_inputs_that_never_get_a_result_end_expired_with_their_escrow_back(tracker: str) -> None:
    m = market(lambda i, a: Act("untaken"))
    out, _ = batch(m, 3, max_republish=2, tracker=tracker)
    assert {r.status for r in out.results} == {"expired"} and [len(r.tasks) for r in out.results] == [3, 3, 3]
    assert m.vault == m.initial and out.book.held == 0
    audited(m, out)


@pytest.mark.parametrize("tracker", TRACKERS)
def test_attempted_tasks_that_expire_are_reclaimed_where_the_deployment_can(tracker: str) -> None:
    m = market(lambda i, a: Act("vanish") if a == 0 else Act())
    out, _ = batch(m, 2, tracker=tracker)
    assert {r.status for r in out.results} == {"finalized"}
    assert len(out.escrow.reclaimed) == 2 and m.paid == 2 * PAY
    audited(m, out)


@pytest.mark.parametrize("tracker", TRACKERS)
def test_on_the_real_network_an_attempted_expired_task_is_reported_waiting_and_still_counts(tracker: str) -> None:
    m = market(lambda i, a: Act("vanish"), extensions=False)
    out, _ = batch(m, 2, max_republish=1, budget=3 * PAY, tracker=tracker)
    # round 1 fits one input only: the first round's escrow is still held (waiting)
    assert [r.status for r in out.results] == ["expired", "over_budget"]
    assert len(out.results[0].open_escrow) == 2 and len(out.results[1].open_escrow) == 1
    assert out.results[1].republished == 0 and out.results[1].tasks == out.results[1].tasks[:1]
    assert out.book.held == 3 * PAY <= 3 * PAY and m.peak_escrow <= 3 * PAY
    assert len(out.escrow.waiting) == 3
    audited(m, out)  # every held wei is reported as waiting


@pytest.mark.parametrize("tracker", TRACKERS)
def test_a_budget_exactly_at_the_first_round_fits_and_republishing_reuses_returned_escrow(tracker: str) -> None:
    m = market(lambda i, a: Act("untaken") if a == 0 else Act())
    out, _ = batch(m, 4, budget=4 * PAY, tracker=tracker)
    assert {r.status for r in out.results} == {"finalized"} and m.peak_escrow == 4 * PAY
    audited(m, out)


@pytest.mark.parametrize("tracker", TRACKERS)
def test_a_budget_one_wei_short_of_a_round_leaves_the_last_input_over_budget(tracker: str) -> None:
    m = market(lambda i, a: Act("vanish", after=1) if a == 0 else Act(), extensions=False)
    out, _ = batch(m, 2, budget=3 * PAY - 1, max_republish=1, tracker=tracker)
    # 2 held (waiting), 1 wei short of 3: round 1 publishes none
    assert [r.status for r in out.results] == ["over_budget", "over_budget"]
    assert out.results[0].error == "re-publishing would exceed the budget of 0.029999999999999999 OGPU"
    assert m.peak_escrow == 2 * PAY and len(m.tasks) == 2
    audited(m, out)


@pytest.mark.parametrize("tracker", TRACKERS)
def test_escalation_raises_the_payment_of_untaken_inputs_within_the_budget(tracker: str, caplog: Any) -> None:
    m = market(lambda i, a: Act("untaken") if a == 0 else Act())
    policy = parse_escalation("escalate", {"factor": 3, "cap": f"{10 * PAY} wei"}, PAY)
    with caplog.at_level(logging.INFO, logger="test.rounds"):
        out, _ = batch(m, 2, budget=5 * PAY, escalator=policy, tracker=tracker)
    payments = sorted(t.payment for t in m.tasks.values())
    assert payments == [PAY, PAY, 5 * PAY // 2, 5 * PAY // 2], "3x capped by the budget for both inputs"
    assert {r.status for r in out.results} == {"finalized"} and m.peak_escrow <= 5 * PAY
    assert out.book.held_peak <= 5 * PAY
    assert "round 1: escalation escalate raises the payment from 0.01 OGPU to 0.025 OGPU (budget 0.05 OGPU)" in (
        caplog.messages
    )
    audited(m, out)


def test_an_escalated_payment_is_kept_for_the_rounds_after() -> None:
    m = market(lambda i, a: Act("untaken") if a < 2 else Act())
    policy = parse_escalation("escalate", {"factor": 2, "cap": f"{3 * PAY} wei"}, PAY)
    out, _ = batch(m, 1, max_republish=2, escalator=policy, batch_deadline=400)
    assert [t.payment for t in m.tasks.values()] == [PAY, 2 * PAY, 3 * PAY]
    assert out.results[0].status == "finalized"
    audited(m, out)


@pytest.mark.parametrize("tracker", TRACKERS)
def test_escalation_does_not_raise_for_inputs_that_were_taken_and_failed(tracker: str) -> None:
    m = market(lambda i, a: Act("vanish") if a == 0 else Act())
    policy = parse_escalation("escalate", {"factor": 2, "cap": f"{4 * PAY} wei"}, PAY)
    out, _ = batch(m, 2, escalator=policy, tracker=tracker)
    assert {t.payment for t in m.tasks.values()} == {PAY}
    audited(m, out)


@pytest.mark.parametrize("tracker", TRACKERS)
def test_a_first_round_that_failed_one_visible_way_stops_without_republishing(tracker: str, caplog: Any) -> None:
    m = market(lambda i, a: Act("error", error="provider error: no such function 'echo'"))
    with caplog.at_level(logging.INFO, logger="test.rounds"):
        out, ledger = batch(m, 3, max_republish=3, tracker=tracker)
    assert out.stopped == "provider error: no such function 'echo'"
    assert len(m.tasks) == 3, "nothing re-published"
    assert len(out.escrow.waiting) == 3, "attempted, before their expiry: held, and reported"
    assert all(r.open_escrow for r in out.results) and {r.status for r in out.results} == {"failed"}
    assert len(ledger.tasks) == 3, "held: the flow's failure hook settles them again"
    assert "round 0: 3 of 3 input(s) gave no result (provider error: 3)" in caplog.messages
    assert (
        "round 0: every input failed the same way, none re-published: provider error: no such function 'echo'"
        in caplog.messages
    )
    audited(m, out)


@pytest.mark.parametrize("tracker", TRACKERS)
def test_refused_results_everywhere_stop_the_batch_too(tracker: str) -> None:
    m = market(lambda i, a: Act("reject"), extensions=False)
    out, _ = batch(m, 2, max_republish=2, tracker=tracker)
    assert out.stopped is not None and len(m.tasks) == 2
    assert all(r.open_escrow for r in out.results), "attempted: waiting for the network, and said so"
    audited(m, out)


def test_a_later_round_that_failed_one_visible_way_stops_a_batch_without_results() -> None:
    m = market(lambda i, a: Act("untaken") if a == 0 else Act("error", error="provider error: oom"))
    out, _ = batch(m, 2, max_republish=3, batch_deadline=1000)
    assert out.stopped == "provider error: oom" and len(m.tasks) == 4, "round 1 failed one way: no round 2"
    audited(m, out)


def test_a_batch_answered_by_the_cache_in_part_goes_on_after_one_visible_failure() -> None:
    from .test_engine_cache import DictCache

    cache = DictCache()
    cache.fill(items(2)[0], "known")
    m = market(lambda i, a: Act("error", error="provider error: oom") if a == 0 else Act())
    out, _ = batch(m, 2, cache=cache)
    assert out.stopped is None and [r.status for r in out.results] == ["finalized", "finalized"]
    audited(m, out)


@pytest.mark.parametrize("tracker", TRACKERS)
def test_mixed_failures_are_republished_and_a_batch_with_results_goes_on(tracker: str, caplog: Any) -> None:
    errors = {0: Act("error", error="oom"), 1: Act("error", error="no such function")}
    m = market(lambda i, a: errors.get(i, Act()) if a == 0 else Act())
    with caplog.at_level(logging.INFO, logger="test.rounds"):
        out, _ = batch(m, 3, tracker=tracker)
    assert out.stopped is None and {r.status for r in out.results} == {"finalized"}
    assert "round 0: 2 of 3 input(s) gave no result (provider error: 2)" in caplog.messages
    assert "round 1: re-publishing 2 input(s)" in caplog.messages
    audited(m, out)


@pytest.mark.parametrize("tracker", TRACKERS)
def test_a_deadline_shorter_than_the_tasks_ends_what_it_could_not_finish(tracker: str) -> None:
    m = market(lambda i, a: Act("untaken"))
    out, _ = batch(m, 3, max_republish=3, batch_deadline=40, tracker=tracker)
    assert {r.status for r in out.results} == {"expired"}
    assert all(len(r.tasks) == 1 for r in out.results), "no round after the deadline"
    assert {t.expiry for t in m.tasks.values()} == {m.tasks[out.results[0].tasks[0]].published_at + 40}
    audited(m, out)


def test_inputs_not_published_by_the_deadline_end_deadline() -> None:
    m = market()
    out, _ = batch(m, 3, batch_deadline=5)  # less than MIN_TTL ahead: nothing can be published
    assert {r.status for r in out.results} == {"deadline"} and m.publish_calls == 0
    assert all(r.tasks == [] for r in out.results)
    audited(m, out)


@pytest.mark.parametrize("tracker", TRACKERS)
def test_manual_confirmation_pays_the_chosen_price_and_returns_the_rest(tracker: str) -> None:
    m = market(lambda i, a: Act("answer", price=PAY // 4))
    out, _ = batch(m, 3, tracker=tracker)
    assert m.paid == 3 * PAY // 4 and m.vault == m.initial - 3 * PAY // 4
    assert out.book.held == 0 and [r.payment for r in out.results] == [PAY // 4] * 3
    audited(m, out)


def test_a_round_waits_until_its_tasks_expiry_plus_a_slack_and_no_longer() -> None:
    m = market(lambda i, a: Act("untaken"))
    seconds: list[float] = []
    _, wait = rounds_ports(m, "slack")

    def timed(tasks: Any, s: float) -> Any:
        seconds.append(s)
        return wait(tasks, s)

    batch(m, 1, key="slack", max_republish=0, wait=timed)
    assert seconds == [TIMEOUT + 30]


def test_a_round_waits_no_longer_than_the_batch_deadline() -> None:
    m = market(lambda i, a: Act("untaken"))
    seconds: list[float] = []
    _, wait = rounds_ports(m, "short")

    def timed(tasks: Any, s: float) -> Any:
        seconds.append(s)
        return wait(tasks, s)

    batch(m, 1, key="short", max_republish=0, wait=timed, batch_deadline=40)
    assert seconds == [40] and [t.expiry - t.published_at for t in m.tasks.values()] == [40]


def test_the_market_port_publishes_one_attempt_at_a_time_with_the_windows_ttl() -> None:
    calls: list[tuple[Any, ...]] = []
    port = TaskMarket(lambda: 1000, lambda *args: calls.append(args) or [])
    expiry = port.now() + 60
    port.publish(items(2), PAY, expiry, marks=batch_marks("k", [3, 5], 1), indexes=[3, 5], existing={})
    assert calls == [(items(2), PAY, 60, [3, 5], 1)]
    with pytest.raises(ValueError, match="one attempt"):
        port.publish(
            items(2),
            PAY,
            expiry,
            marks=[*batch_marks("k", [3], 0), *batch_marks("k", [5], 1)],
            indexes=[3, 5],
            existing={},
        )
