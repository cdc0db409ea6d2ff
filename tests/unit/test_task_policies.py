"""The built-in task policies and the worker's choice among offers: no chain, no server."""

from __future__ import annotations

import pytest

from ogpu_prefect.chain.types import DeliveryMethod
from ogpu_prefect.plugins.task_policies import TakeAll, Threshold
from ogpu_prefect.worker.policy import TaskOffer
from ogpu_prefect.worker.watcher import choose_offers


def offer(
    task: str,
    payment: int = 100,
    expiry: int = 1_000,
    method: DeliveryMethod = DeliveryMethod.FIRST_RESPONSE,
    attempts: int = 0,
) -> TaskOffer:
    return TaskOffer(task, "0xs", payment, expiry, method, expiry - 500, attempts)


def test_take_all_asks_the_full_payment() -> None:
    assert TakeAll().price(offer("a", payment=123)) == 123


def test_threshold_skips_cheap_or_late_tasks_and_underbids_on_manual_sources() -> None:
    policy = Threshold(min_payment=50, min_seconds_left=30, price_fraction=0.5)
    assert policy.price(offer("a", payment=40)) is None
    assert policy.price(TaskOffer("b", "0xs", 100, 1_000, DeliveryMethod.FIRST_RESPONSE, 10)) is None
    assert policy.price(offer("c", payment=100)) == 100
    assert policy.price(offer("d", payment=100, method=DeliveryMethod.MANUAL_CONFIRMATION)) == 50
    with pytest.raises(ValueError, match="price_fraction"):
        Threshold(price_fraction=0)


def test_the_watcher_takes_soonest_expiry_first_and_races_last_within_capacity() -> None:
    waiting = {
        t.task: t
        for t in [
            offer("late", expiry=900),
            offer("soon", expiry=600),
            offer("raced", expiry=550, attempts=1),
            offer("mid", expiry=700),
        ]
    }
    chosen, dropped = choose_offers(waiting, 2, now=500, policy=TakeAll(), rng=lambda: 0.0)
    assert [o.task for o, _ in chosen] == ["soon", "mid"]
    assert dropped == [] and set(waiting) == {"late", "raced"}


def test_the_watcher_drops_what_expired_or_the_policy_declines() -> None:
    waiting = {t.task: t for t in [offer("gone", expiry=400), offer("cheap", payment=1), offer("fine")]}
    chosen, dropped = choose_offers(waiting, 5, now=500, policy=Threshold(min_payment=10, min_seconds_left=0))
    assert [o.task for o, _ in chosen] == ["fine"]
    assert sorted(dropped) == ["cheap", "gone"] and waiting == {}


def test_a_price_above_the_payment_is_capped() -> None:
    class Greedy(TakeAll):
        def price(self, o: TaskOffer) -> int:
            return o.payment * 10

    [(o, price)] = choose_offers({"a": offer("a", payment=7)}, 1, now=0, policy=Greedy())[0]
    assert price == 7
