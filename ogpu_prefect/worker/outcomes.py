"""How a provider's task can end: the errors and the result of `Provider.execute`."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from ..chain.types import TaskStatus


class ProviderError(Exception):
    """A task could not be executed (no compose for our environment, service failure, deadline)."""


TakenReason = StrEnum(
    "TakenReason",
    {
        "FINALIZED_ELSEWHERE": "finalized by another provider",
        "CANCELED": "cancelled by its client",
        "EXPIRED": "expired before our response",
        "LEFT_CHAIN": "the task is not on this chain any more (reverted or reorganised)",
    },
)
"""Why a task ended without our response, though nothing failed on our side."""


class TaskTakenError(ProviderError):
    """The task was finalized (another provider answered first), cancelled by its client, expired
    before our response, or left the chain. `reason` says which."""

    def __init__(self, task: str, reason: TakenReason) -> None:
        self.task, self.reason = task, reason
        super().__init__(f"task {task}: {reason.value}")


class TaskCancelledError(ProviderError):
    """We stopped the task: its flow run was cancelled in Prefect, or the worker is stopping."""


@dataclass(frozen=True)
class Executed:
    """A task we answered: our Response, the URL of the stored result, the payment asked."""

    response: str
    data_url: str
    payment: int
    resumed: bool = False
    """True when the response was already on chain (a restart after a crash)."""
    block: int | None = None
    """The block our response was mined in (None: not known, e.g. found already on chain)."""


def closed_reason(status: TaskStatus) -> TakenReason | None:
    """The reason a task in `status` is closed to us, or None while it is open."""
    return {
        TaskStatus.FINALIZED: TakenReason.FINALIZED_ELSEWHERE,
        TaskStatus.CANCELED: TakenReason.CANCELED,
        TaskStatus.EXPIRED: TakenReason.EXPIRED,
    }.get(status)
