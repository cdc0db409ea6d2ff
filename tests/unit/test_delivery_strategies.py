"""The built-in delivery methods' decisions on synthetic task views: no chain, no server."""

from __future__ import annotations

import threading
from typing import Any

from ogpu_prefect.chain.types import TaskStatus
from ogpu_prefect.delivery import DecisionKind, FailReason, ResponseView, TaskView, prefetch
from ogpu_prefect.plugins.auction import Auction
from ogpu_prefect.plugins.consensus import Consensus
from ogpu_prefect.plugins.first_response import FirstResponse
from ogpu_prefect.plugins.manual import Manual


def response(i: int, payload: Any, payment: int = 100, seen: float = 0.0) -> ResponseView:
    return ResponseView(f"0xr{i}", f"0xp{i}", payment, f"u{i}", seen, lambda url, p=payload: p)


def view(status: TaskStatus, responses: list[ResponseView], now: float = 100.0, winner: str | None = None) -> TaskView:
    return TaskView("0xt", status, 100, 1_000, responses, len(responses), winner, now=now)


def test_first_response_waits_then_accepts_the_winner() -> None:
    s = FirstResponse()
    assert s.decide(view(TaskStatus.ATTEMPTED, [])).kind is DecisionKind.WAIT
    won = view(TaskStatus.FINALIZED, [response(1, {"r": 1})], winner="0xp1")
    decision = s.decide(won)
    assert decision.kind is DecisionKind.ACCEPT and decision.response.provider == "0xp1"


def test_a_task_closed_without_a_usable_winner_fails_with_its_reason() -> None:
    for status, why in [
        (TaskStatus.EXPIRED, FailReason.EXPIRED),
        (TaskStatus.CANCELED, FailReason.CANCELED),
        (TaskStatus.FINALIZED, FailReason.FINALIZED_ELSEWHERE),
    ]:
        decision = FirstResponse().decide(view(status, [], winner="0xelse"))
        assert decision.kind is DecisionKind.FAIL and decision.fail_reason is why


def test_manual_first_confirms_the_earliest_valid_response() -> None:
    s = Manual(policy="first", validator=lambda p: p.get("ok"))
    rs = [response(1, {"ok": False}, seen=1), response(2, {"ok": True}, seen=2), response(3, {"ok": True}, seen=3)]
    decision = s.decide(view(TaskStatus.RESPONDED, rs))
    assert decision.kind is DecisionKind.CONFIRM and decision.response.address == "0xr2"


def test_manual_lowest_price_waits_for_its_window_or_enough_responses() -> None:
    rs = [response(1, {"v": 1}, payment=90, seen=10), response(2, {"v": 1}, payment=50, seen=11)]
    s = Manual(policy="lowest_price", window=5)
    assert s.decide(view(TaskStatus.RESPONDED, rs, now=12)).kind is DecisionKind.WAIT
    assert s.decide(view(TaskStatus.RESPONDED, rs, now=16)).response.address == "0xr2"
    assert (
        Manual(policy="lowest_price", window=99, enough=2).decide(view(TaskStatus.RESPONDED, rs, now=12)).kind
        is DecisionKind.CONFIRM
    )


def test_a_response_whose_payload_cannot_be_read_is_never_confirmed() -> None:
    unreadable = ResponseView("0xr1", "0xp1", 1, "u", 0.0, lambda url: (_ for _ in ()).throw(OSError("refused")))
    assert Manual(policy="first").decide(view(TaskStatus.RESPONDED, [unreadable])).kind is DecisionKind.WAIT
    assert unreadable.fetch_error == "refused"


def test_consensus_confirms_the_cheapest_of_k_agreeing() -> None:
    rs = [
        response(1, {"result": 7}, payment=80),
        response(2, {"result": 8}, payment=10),
        response(3, {"result": 7}, payment=60),
    ]
    decision = Consensus(k=2).decide(view(TaskStatus.RESPONDED, rs))
    assert decision.kind is DecisionKind.CONFIRM and decision.response.address == "0xr3"
    assert Consensus(k=3).decide(view(TaskStatus.RESPONDED, rs)).kind is DecisionKind.WAIT


def test_auction_confirms_the_lowest_bid_after_its_window() -> None:
    rs = [response(1, {"v": 1}, payment=70, seen=0), response(2, {"v": 1}, payment=30, seen=1)]
    assert Auction(window=5).decide(view(TaskStatus.RESPONDED, rs, now=3)).kind is DecisionKind.WAIT
    assert Auction(window=5).decide(view(TaskStatus.RESPONDED, rs, now=6)).response.address == "0xr2"


def test_new_responses_payloads_are_read_together_each_once_and_failures_as_a_lazy_read() -> None:
    """Three reads can only pass a three-party barrier if they are in flight at once (one by one,
    the first would wait for the barrier's timeout and fail)."""
    barrier, calls = threading.Barrier(3, timeout=10), []

    def fetch(url: str) -> Any:
        calls.append(url)
        if url == "bad":
            raise OSError("gone")
        barrier.wait()
        return {"url": url}

    views = [ResponseView(f"0xr{i}", "0xp", 1, url, 0.0, fetch) for i, url in enumerate(["u0", "u1", "u2", "bad"])]
    prefetch(views)
    assert [v.payload for v in views[:3]] == [{"url": "u0"}, {"url": "u1"}, {"url": "u2"}]
    assert all(v.fetched for v in views[:3]) and sorted(calls) == ["bad", "u0", "u1", "u2"], "each read once"
    assert not views[3].fetched and views[3].fetch_error == "gone", "a failed read backs off as a lazy one does"
