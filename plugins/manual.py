"""`manual`: for MANUAL_CONFIRMATION sources; the client picks a response and confirms it.

Options:
- `policy`: "first" (the first valid response), or "lowest_price" (the cheapest valid response
  once `window` seconds have passed since the first one, or as soon as `enough` valid responses
  are in).
- `window`: seconds to collect responses under "lowest_price" (default 5).
- `enough`: under "lowest_price", confirm early once this many valid responses arrived (default:
  never early; attempters that have not answered yet may still underbid).
- `validator`: a callable(payload) -> bool; responses it rejects (or whose payload cannot be
  fetched) are never confirmed. A response it rejects, or raises on, is marked refused
  (`Rejection.VALIDATOR`): it counts against its provider's reputation, and a task whose every
  response was refused is given up so that its input is re-published.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ogpu_prefect.chain.types import DeliveryMethod, TaskStatus
from ogpu_prefect.delivery import Decision, DeliveryStrategy, Rejection, ResponseView, TaskView
from ogpu_prefect.hookspecs import hookimpl


class Manual(DeliveryStrategy):
    name = "manual"
    requires = DeliveryMethod.MANUAL_CONFIRMATION
    POLICIES = ("first", "lowest_price")

    def __init__(
        self,
        policy: str = "first",
        window: float = 5.0,
        validator: Callable[[Any], bool] | None = None,
        enough: int | None = None,
    ) -> None:
        if policy not in self.POLICIES:
            raise ValueError(f"policy: one of {self.POLICIES}, not {policy!r}")
        self.policy = policy
        self.window = window
        self.validator = validator
        self.enough = enough

    def valid(self, response: ResponseView) -> bool:
        if response.rejection is not None:
            return False
        payload = response.payload
        if payload is None:
            return False  # not read yet (or unreadable: the waiting loop says so once retries end)
        try:
            ok = self.validator is None or bool(self.validator(payload))
        except Exception:  # a payload of the wrong shape is a wrong answer
            ok = False
        if not ok:
            response.reject(Rejection.VALIDATOR)
        return ok

    def decide(self, task: TaskView) -> Decision:
        if task.status.is_final:
            return self.on_terminal(task)
        if task.status is not TaskStatus.RESPONDED:
            return Decision.wait()
        valid = [r for r in task.responses if self.valid(r)]
        if not valid:
            return Decision.wait()
        if self.policy == "first":
            return Decision.confirm(min(valid, key=lambda r: r.seen_at))
        early = self.enough is not None and len(valid) >= self.enough
        if early or (task.now - (task.first_response_at or task.now)) >= self.window:
            return Decision.confirm(min(valid, key=lambda r: (r.payment, r.seen_at)))
        return Decision.wait()


@hookimpl
def ogpu_prefect_delivery_methods() -> dict[str, type[DeliveryStrategy]]:
    return {Manual.name: Manual}
