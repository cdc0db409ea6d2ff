"""The client's waiting loop: follows published tasks through Nexus events until a delivery method
decides each one (confirming responses where it says so), the task expires, or the deadline.

One `eth_getLogs` per poll for the whole batch (`EventCursor`), a batched read for what the events
name, and the delivery method's decision for the tasks with news. An RPC outage pauses the loop
(logged) until the node answers again or the deadline passes: it never ends the batch early.
`run` waits for a fixed set of tasks; a streaming batch (streaming.py) drives `poll` itself,
`add`ing tasks as it publishes them and `forget`ting those that ended.

With a `ReputationBook` (reputation.py) the loop is where every delivery method's refusals are
counted: it books the responses a method rejected, payloads that stayed unreadable and accepted
winners; it hides banned providers' responses from the method; and, with or without a book, it
fails a task whose every response was refused once no better one is to be expected (REJECTED:
run_batch re-publishes the input).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from .chain.connection import Chain, ChainClock
from .chain.errors import TxRpcError
from .chain.logs import EventLog
from .chain.tx import Receipt, TxSender
from .chain.types import TaskStatus
from .delivery import Decision, DecisionKind, DeliveryStrategy, FailReason, Rejection, ResponseView, TaskView, prefetch
from .models import PublishedTask, Tracked
from .provider_failures import FAILURES_EVERY_S, FailureSource, fail_together

if TYPE_CHECKING:
    from .reputation import ReputationBook

log = logging.getLogger(__name__)

SWEEP_S = 1.0
"""Seconds between the waiting loop's passes over every undecided task. In between, only tasks
with news or with responses (a response window may close) are decided: a pass over 10,000 tasks
costs ~100 ms of CPU."""
WATCHED_EVENTS = ("Attempted", "ResponseSubmitted", "TaskStatusChanged")
BOOK_FLUSH_S = 5.0
"""Seconds between writes of what the reputation book learned, while waiting: a crashed flow loses
at most these seconds of it, and the write at the wait's end is small on a store already warm (the
first write of a process to Prefect Variables took 2.8 s of a 1,000-task batch's end in
bench/realnet.py: the lock's limit, a client, the first lease)."""
REJECT_GRACE_S = 30.0
"""Without a reputation policy: how long a task whose every response was refused waits for another."""
REJECT_QUIET_S = 3.0
"""Once every attempter answered and was refused: seconds without news (an attempt, a response)
before the task is given up. Room for a busy provider's attempt to land: at 1 s, 4 of 100 inputs
in bench/reputation.py were re-published although the honest provider attempted them later."""


ChangeCallback = Callable[[str, Tracked], None]


class WaitingClient(Protocol):
    """What a wait uses of its client (an OGPUClient is one): the chain, its sender, the payload
    fetcher, and sending confirmations."""

    chain: Chain
    sender: TxSender
    fetch: Callable[[str], Any]

    def confirm_responses(self, responses: Sequence[str], *, check: bool = True) -> list[Receipt]: ...


"""Told (kind, task) as tasks change: attempted, responded, rejected (a response refused), finalized,
decided, failed, expired."""


class Waiter:
    """One batch's wait (see module doc). `run` returns when every task is decided or at the
    wall-clock `deadline`, whichever comes first."""

    def __init__(
        self,
        client: WaitingClient,
        published: Sequence[PublishedTask],
        strategy: DeliveryStrategy,
        *,
        from_block: int,
        poll_interval: float = 0.1,
        on_change: ChangeCallback | None = None,
        reputation: ReputationBook | None = None,
        reject_grace_s: float | None = None,
        failures: FailureSource | None = None,
    ) -> None:
        self.client, self.chain, self.strategy = client, client.chain, strategy
        self.tracked = {p.address: Tracked(p) for p in published}
        self.cursor = self.chain.cursor(WATCHED_EVENTS, from_block)
        self.clock = ChainClock(self.chain)
        self.poll_interval = poll_interval
        self.notify = on_change or (lambda kind, t: None)
        self.outage_since: float | None = None
        self.book = reputation
        if reject_grace_s is None:
            reject_grace_s = reputation.policy.reject_grace_s if reputation is not None else REJECT_GRACE_S
        self.reject_grace_s = reject_grace_s
        self._booked: set[str] = set()  # responses whose refusal is counted
        self._fetched_any = False  # our storage answered for some payload
        self._undecided = list(self.tracked.values())
        self._last_sweep = 0.0
        self._ended: list[Tracked] = []
        self.failures = failures
        self._last_failures = time.monotonic()
        self._last_flush = time.monotonic()
        self.accepted = 0  # results accepted in this wait

    def add(self, published: Sequence[PublishedTask], *, catch_up: bool = False) -> None:
        """Follows more tasks (a streaming batch's later publications). `catch_up`: tasks
        published before this wait began (a resumed batch reusing them), whose past events the
        cursor will not see: their state is read from the chain now."""
        new = [Tracked(p) for p in published]
        for t in new:
            self.tracked[t.published.address] = t
        self._undecided += new
        if catch_up and new:
            self._catch_up(new)

    def forget(self, address: str) -> None:
        """Stops following an ended task (its memory is freed; its later events are ignored)."""
        self.tracked.pop(address, None)

    def run(self, deadline: float) -> dict[str, Tracked]:
        """Polls until every task is decided or the wall-clock `deadline` passes."""
        try:
            while True:
                self.poll()
                if all(t.outcome is not None for t in self.tracked.values()) or time.time() >= deadline:
                    return self.tracked
                time.sleep(self._pause())
        finally:
            self.close()

    def _pause(self) -> float:
        """Seconds to the next poll: `poll_interval`, at least 250 ms on a chain with block times
        (a block a second: polling faster only spends calls), 1 s while the node is away."""
        if self.outage_since is not None:
            return 1.0
        return self.poll_interval if self.chain.mines_on_demand() else max(self.poll_interval, 0.25)

    def poll(self) -> list[Tracked]:
        """One pass: new events applied, due tasks decided (confirming where the method says);
        returns the tasks that ended in it (accepted, failed or expired). An RPC outage is
        logged and ends nothing."""
        try:
            touched = self._apply_events(self.cursor.poll())
            now_chain = self.clock.now(self.cursor.head)
            if time.monotonic() - self._last_sweep >= SWEEP_S:
                self._last_sweep = time.monotonic()
                self._undecided = [
                    t for t in self._undecided if t.outcome is None or t.outcome.kind is DecisionKind.CONFIRM
                ]
                due: Iterable[Tracked] = self._undecided
            else:
                due = touched | {t for t in self._undecided if t.responses and t.outcome is None}
            self._decide(due, now_chain)
            self._provider_errors()
            self._back_online()
        except TxRpcError as e:  # the node is away (or erring): wait for it, up to the deadline
            self._offline(e)
        if self.book is not None and (
            self.book.urgent or (self.book.changed and time.monotonic() - self._last_flush >= BOOK_FLUSH_S)
        ):
            self.book.flush()  # a ban: other flows should see it now, not at our end
            self._last_flush = time.monotonic()
        ended, self._ended = self._ended, []
        return ended

    def _provider_errors(self) -> None:
        """Every few seconds: what providers reported about the tasks attempted and unanswered;
        when all open tasks failed the same way and nothing was accepted, they fail now
        (provider_failures.py) instead of waiting out their expiry."""
        if self.failures is None or self.accepted or time.monotonic() - self._last_failures < FAILURES_EVERY_S:
            return  # once a result was accepted, the failures are not the service refusing everything
        self._last_failures = time.monotonic()
        open_ = [t for t in self.tracked.values() if t.outcome is None]
        note = fail_together(self.failures, open_, time.time())
        if note is not None:
            for t in open_:
                self._settle(t, Decision.fail(note, FailReason.PROVIDER_ERROR))

    def close(self) -> None:
        """Writes what the reputation book learned (call once the wait is over)."""
        if self.book is not None:
            self.book.flush()

    def _catch_up(self, tracked: list[Tracked]) -> None:
        from .inspect import response_addresses, snapshot_tasks

        snaps = snapshot_tasks(self.chain, [t.published.address for t in tracked])
        for t, snap in zip(tracked, snaps):
            t.status, t.attempt_count, t.winner = snap.status, snap.attempt_count, snap.winning_provider
            t.last_news = time.time() if snap.attempt_count else 0.0
        pairs = [
            (t, r)
            for t, snap in zip(tracked, snaps)
            if snap.attempt_count
            for r in response_addresses(self.chain, t.published.address)
        ]
        self._load_responses(pairs)

    def _offline(self, error: Exception) -> None:
        if self.outage_since is None:
            self.outage_since = time.monotonic()
            log.warning("the RPC node does not answer (%s); waiting for it until the batch deadline", error)

    def _back_online(self) -> None:
        if self.outage_since is not None:
            log.warning("the RPC node answers again after %.0fs", time.monotonic() - self.outage_since)
            self.outage_since = None

    def _decide(self, due: Iterable[Tracked], now_chain: float) -> None:
        confirms: list[Tracked] = []
        for t in due:
            if t.outcome is not None:
                continue
            view = self._view(t)
            decision = self.strategy.on_terminal(view) if view.status.is_final else self.strategy.decide(view)
            self._review(t, view)
            if decision.kind is DecisionKind.WAIT and not view.status.is_final and self._refused(t, view):
                decision = Decision.fail(self._refusals(t, view), FailReason.REJECTED)
            if decision.kind is DecisionKind.CONFIRM:
                confirms.append(t)
                t.outcome = decision  # provisional: settled by the confirmation's receipt
            elif decision.kind in (DecisionKind.ACCEPT, DecisionKind.FAIL):
                self._settle(t, decision)
            elif now_chain >= t.published.expiry_time:
                self._settle(t, Decision.fail("expired", FailReason.EXPIRED), kind="expired")
        if confirms:
            self._confirm(confirms)

    def _view(self, t: Tracked) -> TaskView:
        """What the delivery method sees: banned providers' responses left out while it still
        chooses (a final task's winner is a fact: FIRST_RESPONSE pays whoever answered first)."""
        responses = list(t.responses.values())
        shown = responses
        if self.book is not None and not t.status.is_final:
            now = time.time()
            shown = [r for r in responses if not self.book.banned(r.provider, now)]
        p = t.published
        return TaskView(
            p.address,
            t.status,
            p.payment,
            p.expiry_time,
            shown,
            t.attempt_count,
            t.winner,
            hidden=len(responses) - len(shown),
        )

    def _review(self, t: Tracked, view: TaskView) -> None:
        """Counts the refusals the delivery method marked, and payloads that stayed unreadable
        while our storage answered for others (an outage of ours is nobody's fault)."""
        for r in view.responses:
            if r.fetched:
                self._fetched_any = True
            elif r.rejection is None and r.unreadable and self._fetched_any:
                r.reject(Rejection.UNREADABLE)
            if r.rejection is not None and r.address not in self._booked:
                self._book(r)
                self.notify("rejected", t)

    def _book(self, r: ResponseView) -> None:
        self._booked.add(r.address)
        if self.book is not None and r.rejection is not None:
            self.book.reject(r.provider, r.rejection)

    def _refused(self, t: Tracked, view: TaskView) -> bool:
        """Every response so far refused (or hidden), and no better one to expect in time: every
        attempter answered (and REJECT_QUIET_S passed without news), or the grace passed."""
        if not t.responses or any(r.rejection is None for r in view.responses):
            return False
        now = time.time()
        if len(t.responses) >= t.attempt_count and now - t.last_news >= REJECT_QUIET_S:
            return True
        last = max(r.rejected_at or r.seen_at for r in t.responses.values())
        return now - last >= self.reject_grace_s

    @staticmethod
    def _refusals(t: Tracked, view: TaskView) -> str:
        counts: dict[str, int] = {}
        for r in view.responses:
            counts[str(r.rejection)] = counts.get(str(r.rejection), 0) + 1
        if view.hidden:
            counts["banned provider"] = view.hidden
        return "every response was refused (" + ", ".join(f"{k}: {n}" for k, n in sorted(counts.items())) + ")"

    def _settle(self, t: Tracked, decision: Decision, kind: str | None = None) -> None:
        if decision.kind is DecisionKind.ACCEPT and decision.response is not None:
            r = decision.response
            r.load()  # the result travels with the outcome, not behind a URL
            if r.fetched:
                self._fetched_any = True
                if self.book is not None:
                    self.book.accept(r.provider)
            elif self._fetched_any and r.address not in self._booked:  # paid (FIRST_RESPONSE), unreadable
                r.reject(Rejection.UNREADABLE)
                self._book(r)
        t.outcome = decision
        t.decided_at = time.time()
        t.note = decision.reason
        self._ended.append(t)
        if decision.kind is DecisionKind.ACCEPT:
            self.accepted += 1
        self.notify(kind or ("decided" if decision.kind is DecisionKind.ACCEPT else "failed"), t)

    def _apply_events(self, events: list[EventLog]) -> set[Tracked]:
        """Applies polled events to the tasks they name; returns those tasks."""
        touched: set[Tracked] = set()
        new_responses: list[tuple[Tracked, str]] = []
        finalized: list[Tracked] = []
        for ev in events:
            t = self.tracked.get(ev["task"]) if "task" in ev.args else None
            if t is None:
                continue
            touched.add(t)
            if ev.name in ("Attempted", "ResponseSubmitted"):
                t.last_news = time.time()
            if ev.name == "Attempted":
                t.attempt_count += 1
                self.notify("attempted", t)
            elif ev.name == "ResponseSubmitted":
                new_responses.append((t, ev["response"]))
            elif ev.name == "TaskStatusChanged":
                t.status = TaskStatus(ev["status"])
                if t.status is TaskStatus.FINALIZED:
                    finalized.append(t)
                elif t.status is TaskStatus.EXPIRED:
                    self.notify("expired", t)
        self._load_responses(new_responses)
        if finalized:
            winners = self.chain.read_many(
                [self.chain.task(t.published.address).read.winning_provider() for t in finalized]
            )
            for t, w in zip(finalized, winners):
                t.winner = w
                self.notify("finalized", t)
        return touched

    def _load_responses(self, pairs: list[tuple[Tracked, str]]) -> None:
        """Reads what each (task, response address) names, in one batch, and the payloads a
        decision will read (`_worth_reading`), together."""
        if not pairs:
            return
        params = self.chain.read_many([self.chain.response(r).read.get_response_params() for _, r in pairs])
        seen = time.time()
        loaded = []
        for (t, r), p in zip(pairs, params):
            t.responses[r] = view = ResponseView(r, p.provider, p.payment, p.data, seen, self.client.fetch)
            if self.book is not None:
                self.book.seen(p.provider, seen)
            loaded.append((t, view))
            self.notify("responded", t)
        prefetch([v for t, v in loaded if self._worth_reading(t, v, seen)])

    def _worth_reading(self, t: Tracked, view: ResponseView, now: float) -> bool:
        """Whether a decision will read this payload: its task is undecided, its provider not
        banned (a ban made by a decision in this same poll comes too late to spare its other
        URLs of the poll), and, for a task already closed, it is the task's only response (a
        FIRST_RESPONSE winner; of several, the delivery method reads the winner's alone)."""
        if t.outcome is not None or (self.book is not None and self.book.banned(view.provider, now)):
            return False
        return not t.status.is_final or len(t.responses) == 1

    def _confirm(self, confirms: list[Tracked]) -> None:
        responses = [t.outcome.response.address for t in confirms]  # type: ignore[union-attr]
        receipts = self.client.confirm_responses(responses, check=False)
        for t, receipt in zip(confirms, receipts):
            decision = t.outcome
            assert decision is not None and decision.response is not None
            if receipt.status == 1:
                t.status, t.winner = TaskStatus.FINALIZED, decision.response.provider
                self._settle(t, Decision.accept(decision.response))
                self.notify("finalized", t)
            else:
                t.outcome = None  # undecided again: the next poll sees the real state
                log.warning(
                    "confirming %s for task %s failed: %s",
                    decision.response.address,
                    t.published.address,
                    self.client.sender.explain(receipt),
                )


def outcome_counts(tracked: Iterable[Tracked]) -> dict[str, int]:
    """How many tasks ended each way, for a round's log line (`expired: 3, rejected: 1`)."""
    counts: dict[str, int] = {}
    for t in tracked:
        if t.outcome is None:
            key = FailReason.DEADLINE.value
        elif t.outcome.kind is DecisionKind.ACCEPT:
            key = "finalized"
        else:
            key = (t.outcome.fail_reason or FailReason.REJECTED).value
        counts[key] = counts.get(key, 0) + 1
    return counts


__all__ = ["ChangeCallback", "Tracked", "Waiter", "outcome_counts"]
