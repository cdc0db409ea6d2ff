"""Built-in task policies for the provider worker.

- `take_all`: attempt every task, ask its full payment.
- `threshold`: attempt tasks paying at least `min_payment` wei with at least `min_seconds_left`
  before expiry; ask `price_fraction` of the payment on manual-confirmation sources (a cheaper
  offer wins `lowest_price` and `auction` selections) and the full payment otherwise.
"""

from __future__ import annotations

from ogpu_prefect.chain.types import DeliveryMethod
from ogpu_prefect.hookspecs import hookimpl
from ogpu_prefect.worker.policy import TaskOffer, TaskPolicy


class TakeAll(TaskPolicy):
    name = "take_all"

    def price(self, offer: TaskOffer) -> int | None:
        return offer.payment


class Threshold(TaskPolicy):
    name = "threshold"

    def __init__(self, min_payment: int = 0, min_seconds_left: float = 10.0, price_fraction: float = 1.0) -> None:
        if not 0 < price_fraction <= 1:
            raise ValueError(f"price_fraction: {price_fraction} is not in (0, 1]")
        self.min_payment = int(min_payment)
        self.min_seconds_left = min_seconds_left
        self.price_fraction = price_fraction

    def price(self, offer: TaskOffer) -> int | None:
        if offer.payment < self.min_payment or offer.seconds_left < self.min_seconds_left:
            return None
        if offer.delivery_method is DeliveryMethod.MANUAL_CONFIRMATION:
            return max(1, int(offer.payment * self.price_fraction))
        return offer.payment


@hookimpl
def ogpu_prefect_task_policies() -> dict[str, type[TaskPolicy]]:
    return {TakeAll.name: TakeAll, Threshold.name: Threshold}
