"""The task-policy plugin interface: which published tasks a provider takes, and at what price.
Plugins register policies through the `ogpu_prefect_task_policies` hook; the worker's
`task_policy` job variable picks one by name (`task_policy_options` configures it)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

from ..chain.types import DeliveryMethod


@dataclass(frozen=True)
class TaskOffer:
    """A published task of a source the provider serves, as the policy sees it."""

    task: str
    source: str
    payment: int
    """The escrowed payment, in wei."""
    expiry_time: int
    delivery_method: DeliveryMethod
    seconds_left: float
    """Until the task's expiry, on the chain's clock."""
    attempts: int = 0
    """Other providers' attempts seen so far. On a FIRST_RESPONSE source an attempted task is a
    race the first attempter is likely to win; the worker offers unattempted tasks first."""


class TaskPolicy(ABC):
    """Base of every task policy. Subclasses set `name` and implement `price`."""

    name: ClassVar[str]

    @abstractmethod
    def price(self, offer: TaskOffer) -> int | None:
        """The payment to ask for `offer` (at most `offer.payment`), or None to leave it. For
        FIRST_RESPONSE sources the response's payment is what is paid; for MANUAL_CONFIRMATION
        sources it is the suggested payment the client's selection may compare."""
