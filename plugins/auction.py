"""`auction`: for MANUAL_CONFIRMATION sources. Collects responses for `window` seconds after the
first one arrives, then confirms the cheapest (ties: the earliest). One of the competition models
OpenGPU lists as planned. A response whose payload cannot be fetched does not bid (the waiting
loop marks it refused once its fetch retries are spent); neither does a refused one.

Options: `window` (seconds, default 5).
"""

from __future__ import annotations

from ogpu_prefect.chain.types import DeliveryMethod
from ogpu_prefect.delivery import Decision, DeliveryStrategy, TaskView
from ogpu_prefect.hookspecs import hookimpl


class Auction(DeliveryStrategy):
    name = "auction"
    requires = DeliveryMethod.MANUAL_CONFIRMATION

    def __init__(self, window: float = 5.0) -> None:
        self.window = window

    def decide(self, task: TaskView) -> Decision:
        if task.status.is_final:
            return self.on_terminal(task)
        first = task.first_response_at
        if first is None or task.now - first < self.window:
            return Decision.wait()
        bids = [r for r in task.responses if r.rejection is None and r.payload is not None]
        if not bids:
            return Decision.wait()
        return Decision.confirm(min(bids, key=lambda r: (r.payment, r.seen_at)))


@hookimpl
def ogpu_prefect_delivery_methods() -> dict[str, type[DeliveryStrategy]]:
    return {Auction.name: Auction}
