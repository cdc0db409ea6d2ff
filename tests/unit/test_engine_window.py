"""The batch engine's streaming window (stream_batch, stream_tasks, scheduled_batch) on the honest
fake chain (tests/unit/fake_market.py): the window and the budget, re-publishing, the early stop,
the deadline, held-back escrow, checkpoint and resume. No anvil, no Prefect; each audits the
fake's ledger."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ogpu_prefect.chain.errors import EscrowHeldError
from ogpu_prefect.chain.types import TaskStatus
from ogpu_prefect.engine import Limits, Window
from ogpu_prefect.engine.window import STALL_S
from ogpu_prefect.models import TaskInput, TaskResult
from ogpu_prefect.publishing import PartialPublishError

from .fake_market import Act, FakeClock, FakeLedger, FakeMarket, FakeTracker, items

PAY = 10**16


class Crash(Exception):
    """The process dies (the results written so far are the checkpoint)."""


def stream(
    m: FakeMarket,
    n: int,
    *,
    key: str = "s1",
    window: int = 4,
    max_republish: int = 1,
    budget: int | None = None,
    deadline: float | None = None,
    done: dict[int, TaskResult] | None = None,
    crash_after: int | None = None,
    resume: bool = False,
) -> tuple[Window, dict[int, TaskResult]]:
    """One run of a streaming batch; `done` is the results checkpoint (kept across runs)."""
    done = {} if done is None else done
    written = [0]

    def emit(r: TaskResult) -> None:
        assert r.index not in done, f"input {r.index} has two results"
        done[r.index] = r
        written[0] += 1
        if crash_after is not None and written[0] >= crash_after:
            raise Crash

    limits = Limits(PAY, 60, window, max_republish, budget, deadline, 0.5)
    w = Window(
        m,
        FakeTracker(m),
        FakeLedger(m),
        limits,
        emit,
        key=key,
        existing=m.find_published(key) if resume else None,
        finalized_before=sum(r.status == "finalized" for r in done.values()),
        clock=m.clock,
    )
    pending: Iterator[tuple[int, TaskInput]] = ((i, x) for i, x in enumerate(items(n)) if i not in done)
    w.run(pending)
    return w, done


def market(script: Any = None, **kw: Any) -> FakeMarket:
    return FakeMarket(FakeClock(), script=script or (lambda i, a: Act(after=1 + i % 3)), **kw)


def audited(m: FakeMarket, done: dict[int, TaskResult], w: Window | None = None) -> None:
    """`w`'s held_back: the escrow artifact the flow writes at its end reports them as waiting."""
    waiting = [t for r in done.values() for t in r.open_escrow] + list(w.held_back if w is not None else ())
    assert m.balanced(), "wei appeared or vanished"
    assert m.stranded(waiting) == 0, "escrow stranded"
    assert m.duplicates() == 0, "a config published twice"


def test_every_input_gets_one_result_with_never_more_than_the_window_open() -> None:
    m = market()
    w, done = stream(m, 30, window=4)
    assert sorted(done) == list(range(30)) and {r.status for r in done.values()} == {"finalized"}
    assert m.peak_open <= 4 and w.held == 0 and w.held_peak <= 4 * PAY
    assert m.paid == 30 * PAY
    audited(m, done)


def test_a_budget_smaller_than_the_window_is_the_ceiling() -> None:
    m = market()
    w, done = stream(m, 12, window=10, budget=3 * PAY)
    assert len(done) == 12 and m.peak_escrow <= 3 * PAY and w.held_peak <= 3 * PAY
    audited(m, done)


def test_untaken_tasks_are_settled_and_republished_up_to_max_republish() -> None:
    m = market(lambda i, a: Act("untaken") if i < 3 else Act())
    w, done = stream(m, 6, window=6, max_republish=2)
    assert [done[i].status for i in range(3)] == ["expired"] * 3 and [len(done[i].tasks) for i in range(3)] == [3] * 3
    assert {done[i].status for i in range(3, 6)} == {"finalized"}
    assert m.vault == m.initial - 3 * PAY
    audited(m, done)


def test_failed_tasks_holding_escrow_count_until_their_escrow_comes_back() -> None:
    # the real network: attempted tasks' escrow returns some time after their expiry
    m = market(lambda i, a: Act("vanish") if a == 0 and i < 2 else Act(), extensions=False, network_returns_after=30)
    w, done = stream(m, 6, window=2, budget=2 * PAY)
    assert {r.status for r in done.values()} == {"finalized"}
    assert m.peak_escrow <= 2 * PAY, "held-back escrow kept counting against the budget"
    assert w.held_back == {} and w.held == 0
    audited(m, done)


def test_a_budget_held_by_escrow_that_never_comes_back_stops_the_batch_saying_so() -> None:
    m = market(lambda i, a: Act("vanish"), extensions=False)
    with pytest.raises(EscrowHeldError) as info:
        stream(m, 4, window=2, budget=2 * PAY, max_republish=0)
    assert len(info.value.tasks) == 2 and m.now() >= max(t.expiry for t in m.tasks.values()) + STALL_S
    assert len(m.tasks) == 2, "nothing published beyond the budget"


def test_a_whole_first_window_failing_one_way_stops_publishing() -> None:
    m = market(lambda i, a: Act("error", error="provider error: image not found"))
    w, done = stream(m, 20, window=5, max_republish=3)
    assert w.stopped == "provider error: image not found"
    assert len(m.tasks) == 5, "only the first window was published"
    assert sorted(done) == list(range(5)) and all(r.open_escrow for r in done.values())
    audited(m, done)


def test_a_failure_after_a_result_does_not_stop_the_stream() -> None:
    m = market(lambda i, a: Act() if i == 0 else Act("error", error="oom", after=5) if a == 0 else Act())
    w, done = stream(m, 6, window=6)
    assert w.stopped is None and {r.status for r in done.values()} == {"finalized"}
    assert len(w.held_back) == 5, "the failed first tasks: attempted, before their expiry"
    audited(m, done, w)


def test_past_the_deadline_nothing_more_is_published_and_the_rest_ends_deadline() -> None:
    m = market(lambda i, a: Act("untaken"))
    w, done = stream(m, 8, window=2, deadline=m.clock.t + 50)
    assert len(done) == 8 and {r.status for r in done.values()} <= {"expired", "deadline"}
    assert sum(r.status == "deadline" for r in done.values()) >= 6
    assert m.vault == m.initial
    audited(m, done)


def test_a_crash_then_a_resume_reuses_what_was_published_and_pays_nothing_twice() -> None:
    m = market(lambda i, a: Act(after=5 + i))
    done: dict[int, TaskResult] = {}
    with pytest.raises(Crash):
        stream(m, 10, window=6, done=done, crash_after=3, key="resumable")
    open_before = [t.address for t in m.tasks.values() if t.status in (TaskStatus.NEW, TaskStatus.RESPONDED)]
    assert len(done) == 3 and open_before, "the crash left tasks in flight"
    w, done = stream(m, 10, window=6, done=done, key="resumable", resume=True)
    assert sorted(done) == list(range(10)) and {r.status for r in done.values()} == {"finalized"}
    assert m.paid == 10 * PAY and len(m.tasks) == 10
    audited(m, done)


def test_a_partial_publish_puts_what_landed_in_the_ledger_for_the_exit_hook() -> None:
    m = market(lambda i, a: Act("untaken"), fail_publish_after=3)
    ledger = FakeLedger(m)
    limits = Limits(PAY, 60, 8, 1, None, None, 0.5)
    w = Window(m, FakeTracker(m), ledger, limits, lambda r: None, key="partial", clock=m.clock)
    with pytest.raises(PartialPublishError):
        w.run(iter(enumerate(items(8))))
    assert len(ledger.tasks) == 3
    assert len(ledger.settle().cancelled) == 3 and m.vault == m.initial  # the hook
    audited(m, {})


def test_a_node_that_fails_while_settling_is_settled_again_later() -> None:
    m = market(lambda i, a: Act("untaken"), cancel_reverts=2)
    w, done = stream(m, 2, window=2, max_republish=0)
    assert w.unreadable == set() and w.held_back == {} and w.held == 0
    assert m.vault == m.initial
    audited(m, done)


def test_resumed_tasks_are_counted_once_against_the_budget() -> None:
    m = market(lambda i, a: Act(after=20))
    done: dict[int, TaskResult] = {}
    with pytest.raises(Crash):
        stream(m, 4, window=4, budget=4 * PAY, done=done, crash_after=1, key="once")
    w, done = stream(m, 4, window=4, budget=4 * PAY, done=done, key="once", resume=True)
    assert len(done) == 4 and w.held_peak <= 4 * PAY and m.peak_escrow <= 4 * PAY
    audited(m, done)


def test_inputs_added_while_it_runs_are_published_and_each_gets_one_result() -> None:
    m = market()
    done: list[TaskResult] = []
    w = Window(
        m,
        FakeTracker(m),
        FakeLedger(m),
        Limits(PAY, 60, 3, 1, None, None, 0.5),
        done.append,
        key="futures",
        clock=m.clock,
    )
    inputs = items(7)
    for i in range(4):
        w.add(i, inputs[i])
    w.step()
    for i in range(4, 7):
        w.add(i, inputs[i])
    while w.step():
        pass
    assert sorted(r.index for r in done) == list(range(7)) and {r.status for r in done} == {"finalized"}
    assert m.peak_open <= 3
    audited(m, {r.index: r for r in done})
