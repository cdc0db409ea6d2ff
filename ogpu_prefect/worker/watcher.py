"""The provider worker's chain watcher, without Prefect: which published tasks of its sources are
open, which are ours from before a restart, and which to take now and at what price.

`ChainWatcher.poll` reads `TaskPublished`, `Attempted` and `SourceUpdated` events since its last
poll (one `EventCursor`), then the new tasks' state through the real network's views (`taskParams`
and `getStatus`; `getDeliveryMethod` once per source; `attempterId` on the first poll only: two
views a task on a metered endpoint instead of four), and sorts them: `resume` (attempted by us before
a restart) or waiting offers. `choose_offers` picks among the offers within free capacity (a pure
function: tests/unit/test_watcher_choice.py).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ..chain.connection import Chain, ChainClock
from ..chain.types import DeliveryMethod, TaskStatus
from .policy import TaskOffer, TaskPolicy

OPEN = (TaskStatus.NEW, TaskStatus.ATTEMPTED, TaskStatus.RESPONDED)


@dataclass(frozen=True)
class Resumable:
    """A task this provider attempted before a restart: it is executed again."""

    task: str
    source: str
    payment: int


@dataclass
class Polled:
    resume: list[Resumable] = field(default_factory=list)
    new_offers: int = 0


def choose_offers(
    waiting: dict[str, TaskOffer], free: int, now: float, policy: TaskPolicy, rng: Callable[[], float] = random.random
) -> tuple[list[tuple[TaskOffer, int]], list[str]]:
    """Takes up to `free` offers out of `waiting`: (offers with the price to ask, tasks dropped).

    Soonest expiry first; on FIRST_RESPONSE sources untouched tasks first (another provider's
    attempt is a race we likely lose); ties in random order, so that workers polling the same batch
    mostly pick different tasks. An offer the policy declines, or that expired, is dropped."""
    chosen: list[tuple[TaskOffer, int]] = []
    dropped: list[str] = []
    if free > 0 and waiting:
        order = sorted(
            waiting.values(),
            key=lambda o: (o.delivery_method is DeliveryMethod.FIRST_RESPONSE and o.attempts > 0, o.expiry_time, rng()),
        )
        for offer in order:
            if len(chosen) >= free:
                break
            waiting.pop(offer.task)
            price = (
                policy.price(replace(offer, seconds_left=offer.expiry_time - now)) if offer.expiry_time > now else None
            )
            if price is not None:
                chosen.append((offer, max(0, min(int(price), offer.payment))))
            else:
                dropped.append(offer.task)
    for t in [t for t, o in waiting.items() if o.expiry_time <= now]:
        waiting.pop(t)  # best effort: the chain decides expiry; stale entries are just dropped
        dropped.append(t)
    return chosen, dropped


class ChainWatcher:
    """Watches the chain for one provider (see module doc). Not thread-safe: one poller."""

    def __init__(self, chain: Chain, provider: str, sources: Sequence[str], from_block: int) -> None:
        self.chain = chain
        self.me = provider.lower()
        self.provider = provider
        self.sources = {s.lower() for s in sources}
        self.cursor = chain.cursor(("TaskPublished", "Attempted", "SourceUpdated"), from_block)
        self.clock = ChainClock(chain)
        self.methods: dict[str, DeliveryMethod] = {}  # source -> the delivery method its tasks carry
        self.waiting: dict[str, TaskOffer] = {}
        self.published: dict[str, str] = {}
        """task -> hash of the transaction that published it (names its flow run: a task address
        can come back after a revert as another task)."""
        self.polls = 0

    def poll(self, *, busy: Callable[[str], bool], skip_resume: set[str]) -> tuple[Polled, float]:
        """Reads what happened since the last poll; returns what to resume, and the chain's time.
        `busy(task)`: executing already; `skip_resume`: tasks already resumed from their flow runs."""
        events = self.cursor.poll()
        found = {
            e["task"]: e.tx_hash for e in events if e.name == "TaskPublished" and e["source"].lower() in self.sources
        }
        polled = Polled()
        now = float(self.clock.now(self.cursor.head))
        self.published.update(found)
        tasks = [t for t in found if not busy(t) and t not in self.waiting]
        updated = {e["source"].lower() for e in events if e.name == "SourceUpdated"}
        for s in updated:  # a later task of the source may carry another method
            self.methods.pop(s, None)
        if tasks:
            self._sort(tasks, polled, now, resume=self.polls == 0, skip_resume=skip_resume, updated=updated)
        for e in events:  # others' attempts: their races come after untouched tasks
            offer = self.waiting.get(e["task"]) if e.name == "Attempted" else None
            if offer is not None and e["provider"].lower() != self.me:
                self.waiting[offer.task] = replace(offer, attempts=offer.attempts + 1)
        self.polls += 1
        return polled, now

    def _sort(
        self, tasks: list[str], polled: Polled, now: float, *, resume: bool, skip_resume: set[str], updated: set[str]
    ) -> None:
        """Reads what a new task's offer needs: its params and status; its delivery method only
        where its source's is not known yet (a task keeps the method its source had when it was
        published: known per source until a SourceUpdated event); whether we attempted it only on
        the first poll, the one that resumes (a task published since cannot be ours yet)."""
        chain = self.chain
        with_method = resume or bool(updated) or not self.methods
        reads: list[Any] = []
        for t in tasks:
            reads += [chain.task(t).read.task_params(), chain.task(t).read.get_status()]
            reads += [chain.task(t).read.get_delivery_method()] if with_method else []
            reads += [chain.task(t).read.attempter_id(self.provider)] if resume else []
        values = iter(chain.read_many(reads))
        for t in tasks:
            source, _config, expiry, payment = next(values)
            status = next(values)
            if with_method:
                method = DeliveryMethod(next(values))
                if source.lower() not in updated:
                    self.methods[source.lower()] = method
            elif (method := self.methods.get(source.lower())) is None:  # a source first seen now: once
                method = self.methods[source.lower()] = DeliveryMethod(chain.task(t).get_delivery_method())
            attempter = next(values) if resume else 0
            if TaskStatus(status) not in OPEN or expiry <= now:
                self.forget(t)
            elif attempter:  # ours, from before a restart
                if resume and t.lower() not in skip_resume:
                    polled.resume.append(Resumable(t, source, payment))
                else:
                    self.forget(t)
            else:
                self.waiting[t] = TaskOffer(t, source, payment, expiry, DeliveryMethod(method), expiry - now)
                polled.new_offers += 1

    def take(self, free: int, now: float, policy: TaskPolicy) -> list[tuple[TaskOffer, int]]:
        """Offers to attempt now, with their prices (see choose_offers)."""
        chosen, dropped = choose_offers(self.waiting, free, now, policy)
        for t in dropped:
            self.forget(t)
        return chosen

    def forget(self, task: str) -> None:
        self.published.pop(task, None)

    def publication(self, task: str) -> str:
        """The publishing transaction of `task`, once (it names the task's flow run)."""
        return self.published.pop(task, "")
