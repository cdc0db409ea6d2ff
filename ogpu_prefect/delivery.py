"""The delivery-method plugin interface: how a task's result is chosen and paid.

A strategy sees one task at a time (`TaskView`: on-chain status, responses, their payloads (fetched
as they arrive, or when first read), when each was first seen) and answers with a `Decision`. The
waiting loop (`ogpu_prefect.client.wait_for`) does the chain reads, the confirmations and the
bookkeeping; a strategy only decides, and marks the responses it refuses (`ResponseView.reject`):
the loop counts those in the providers' reputation (reputation.py), hides banned providers'
responses from the strategy, and gives up on a task whose every response was refused so that its
input is re-published. Plugins register strategies through the `ogpu_prefect_delivery_methods`
hook.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

from .chain.types import DeliveryMethod, TaskStatus


class Rejection(StrEnum):
    """Why a response was refused: what a provider's reputation record counts."""

    VALIDATOR = "validator"
    """The delivery method's validator refused the payload (or raised on it)."""
    DISAGREEMENT = "disagreement"
    """Other providers agreed on another answer, and theirs was chosen."""
    UNREADABLE = "unreadable"
    """The payload could not be fetched (after its retries, while others' could) or parsed."""


@dataclass
class ResponseView:
    address: str
    provider: str
    payment: int
    data_url: str
    seen_at: float  # wall clock, when the waiting loop first saw it
    _fetch: Callable[[str], Any] = field(repr=False, default=lambda url: None)
    _payload: Any = field(default=None, repr=False)
    _fetched: bool = field(default=False, repr=False)
    _failures: int = field(default=0, repr=False)
    _retry_at: float = field(default=0.0, repr=False)
    fetch_error: str | None = None
    rejection: Rejection | None = None
    rejected_at: float | None = None  # wall clock

    MAX_FETCH_FAILURES: ClassVar[int] = 5

    def reject(self, reason: Rejection | str) -> None:
        """Marks this response refused for `reason`: no delivery method should choose it, and the
        waiting loop counts it once in its provider's reputation. The first reason stands."""
        if self.rejection is None:
            self.rejection = Rejection(reason)
            self.rejected_at = time.time()

    @property
    def fetched(self) -> bool:
        """The payload was read (it may still be JSON null)."""
        return self._fetched

    @property
    def unreadable(self) -> bool:
        """Every fetch of the payload failed (MAX_FETCH_FAILURES of them): given up on."""
        return not self._fetched and self._failures >= self.MAX_FETCH_FAILURES

    @property
    def payload(self) -> Any:
        """The response JSON, fetched once it can be; None while it cannot be read (see
        fetch_error). A failed fetch is retried with backoff, up to MAX_FETCH_FAILURES times: a
        storage hiccup must not disqualify a good response, nor a provider's bad URL the batch."""
        if self._fetched or self._failures >= self.MAX_FETCH_FAILURES or time.time() < self._retry_at:
            return self._payload
        try:
            self._payload = self._fetch(self.data_url)
            self._fetched, self.fetch_error = True, None
        except Exception as e:
            self._failures += 1
            self._retry_at = time.time() + 0.2 * 2**self._failures
            self.fetch_error = str(e)
        return self._payload

    def load(self, tries: int = 3, pause: float = 0.2) -> Any:
        """Fetches the payload now, retrying a few times regardless of backoff: for a result
        about to be handed back."""
        for attempt in range(tries):
            self._retry_at = 0.0
            self._failures = min(self._failures, self.MAX_FETCH_FAILURES - 1)
            if self.payload is not None or self._fetched:
                break
            time.sleep(pause * (attempt + 1))
        return self._payload


def prefetch(views: Sequence[ResponseView]) -> None:
    """Reads many new responses' payloads 8 at a time (each as its `payload` would), before
    anything decides on them: one by one, a wait's loop spent a round trip per result (at 10,000
    tasks, 35% of the client's samples)."""
    if len(views) <= 1:
        return  # read when decided on, as before
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(min(8, len(views)), thread_name_prefix="ogpu-fetch") as pool:
        list(pool.map(lambda v: v.payload, views))


@dataclass
class TaskView:
    address: str
    status: TaskStatus
    payment: int
    expiry_time: int
    responses: list[ResponseView]
    attempt_count: int
    winner: str | None = None  # provider, once FINALIZED
    now: float = field(default_factory=time.time)
    hidden: int = 0
    """Responses of banned providers, left out of `responses` (attempt_count still counts them)."""

    @property
    def first_response_at(self) -> float | None:
        return min((r.seen_at for r in self.responses), default=None)


class DecisionKind(StrEnum):
    WAIT = "wait"
    """Nothing to do yet."""
    CONFIRM = "confirm"
    """Confirm (and so pay) this response: MANUAL_CONFIRMATION sources."""
    ACCEPT = "accept"
    """This response won already (FIRST_RESPONSE, or confirmed): take its result."""
    FAIL = "fail"
    """Give up on this task; the batch may re-publish its input."""


class FailReason(StrEnum):
    """Why a task gave no result: what a batch logs and counts per round."""

    EXPIRED = "expired"
    """No accepted response before the task's expiry."""
    CANCELED = "canceled"
    FINALIZED_ELSEWHERE = "finalized without us"
    """Finalized for a response the client did not see (another client's confirmation)."""
    REJECTED = "rejected"
    """Responses came, and every one was refused (a validator, no agreement, unreadable, a banned
    provider), with no better one to expect in time."""
    DEADLINE = "deadline"
    """The batch's deadline passed first."""
    PROVIDER_ERROR = "provider error"
    """Every task still open was failed by its providers the same way, as they reported it (their
    `ogpu.provider.task.failed` events), and nothing succeeded: waiting out the expiry would not
    help."""


@dataclass(frozen=True)
class Decision:
    """What a delivery method says about one task (see DecisionKind)."""

    kind: DecisionKind
    response: ResponseView | None = None
    reason: str = ""
    fail_reason: FailReason | None = None

    @classmethod
    def wait(cls) -> Decision:
        return cls(DecisionKind.WAIT)

    @classmethod
    def confirm(cls, response: ResponseView) -> Decision:
        return cls(DecisionKind.CONFIRM, response)

    @classmethod
    def accept(cls, response: ResponseView) -> Decision:
        return cls(DecisionKind.ACCEPT, response)

    @classmethod
    def fail(cls, reason: str, why: FailReason = FailReason.REJECTED) -> Decision:
        return cls(DecisionKind.FAIL, reason=reason, fail_reason=why)


class DeliveryStrategy(ABC):
    """Base of every delivery method. Subclasses set `name` and `requires` (the on-chain delivery
    method their sources must use) and implement `decide`. Options come as keyword arguments."""

    name: ClassVar[str]
    requires: ClassVar[DeliveryMethod]

    def __init__(self, **options: Any) -> None:
        if options:
            raise TypeError(f"{type(self).__name__} takes no options, got {sorted(options)}")

    @abstractmethod
    def decide(self, task: TaskView) -> Decision:
        """Called when the task's on-chain state or responses change, on every poll while it has
        responses (a window may close), and otherwise about once a second (`client.SWEEP_S`)."""

    def on_terminal(self, task: TaskView) -> Decision:
        """A task that can make no more progress (CANCELED, EXPIRED, or FINALIZED without us)."""
        winner = next((r for r in task.responses if r.provider == task.winner), None)
        if task.status is TaskStatus.FINALIZED and winner is not None:
            return Decision.accept(winner)
        why = {TaskStatus.CANCELED: FailReason.CANCELED, TaskStatus.EXPIRED: FailReason.EXPIRED}.get(
            task.status, FailReason.FINALIZED_ELSEWHERE
        )
        return Decision.fail(f"task {task.status.name.lower()}", why)
