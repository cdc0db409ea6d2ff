"""An honest fake of the chain for the batch engine's unit tests (no anvil, no Prefect).

It keeps the ledger the real contracts keep: the client's Vault balance, each task's escrow and
status, what providers were paid, and every config URL published (a second task with one config
is a duplicate). Providers are scripted per (input, attempt): they answer, fail, refuse, or leave
a task untaken, at a chosen second of the fake clock. Settling follows escrow.settle's rules
(cancel NEW, reclaim expired attempted tasks where the deployment can, report the rest as
waiting). The tests assert on this ledger: no wei stranded, nothing paid or published twice.

This replaces the devnet's contracts and a Waiter's chain reads, which is what these tests are
about: the engine's decisions. The real chain, storage and Prefect are covered by the behaviour
tests (tests/test_run_batch.py, tests/test_stream_batch.py, tests/test_reliability.py).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ogpu_prefect.chain.errors import BalanceTooLowError, TxRpcError
from ogpu_prefect.chain.types import TaskStatus
from ogpu_prefect.engine.window import batch_marks
from ogpu_prefect.escrow import EscrowReport
from ogpu_prefect.models import PublishedTask, TaskInput, TaskResult
from ogpu_prefect.publishing import PartialPublishError
from ogpu_prefect.reconcile import OnChainTask

SOURCE = "0x" + "50" * 20
PROVIDER = "0x" + "70" * 20
OPEN = (TaskStatus.NEW, TaskStatus.ATTEMPTED, TaskStatus.RESPONDED)


class FakeClock:
    """Wall time, monotonic time and chain time in one: sleeping advances it."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.t = start

    def time(self) -> float:
        return self.t

    def monotonic(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += max(seconds, 0.001)


@dataclass(frozen=True)
class Act:
    """What the providers do with one task: `kind` at `after` seconds from its publication.

    answer: a provider's result is accepted and paid (`price`: what it asked, MANUAL_CONFIRMATION;
    None: the whole payment, FIRST_RESPONSE). error: a provider attempts it and reports `error`.
    reject: its every response is refused. untaken: nobody takes it (it expires NEW). vanish: a
    provider attempts it and never answers (it expires ATTEMPTED)."""

    kind: str = "answer"
    after: float = 1.0
    price: int | None = None
    error: str = "provider error: boom"


@dataclass
class FakeTask:
    address: str
    index: int
    config_url: str
    payment: int
    expiry: int
    published_at: float
    act: Act
    status: TaskStatus = TaskStatus.NEW
    escrow: int = 0  # wei the task holds


@dataclass
class FakeMarket:
    """The chain, the Vault and the providers (see module doc)."""

    clock: FakeClock
    vault: int = 10**21
    script: Callable[[int, int], Act] = lambda index, attempt: Act()
    extensions: bool = True  # the devnet's reclaimExpired; False: the real network
    network_returns_after: float | None = None
    """The real network's expiry handling: an expired attempted task's escrow comes back this long
    after its expiry (None: never, within the test)."""
    fail_publish_after: int | None = None  # publish this many tasks, then the node goes away
    node_down: bool = False  # reads and sends fail (settling: unreadable)
    cancel_reverts: int = 0  # the next n cancels revert (a race: attempted meanwhile)
    tasks: dict[str, FakeTask] = field(default_factory=dict)
    paid: int = 0  # to providers
    configs: Counter[str] = field(default_factory=Counter)
    publish_calls: int = 0
    peak_escrow: int = 0
    peak_open: int = 0

    def __post_init__(self) -> None:
        self.initial = self.vault

    # ---- the chain ----

    def now(self) -> int:
        return int(self.clock.t)

    def publish(
        self,
        items: Sequence[TaskInput],
        payment: int,
        expiry: int,
        *,
        marks: Sequence[dict[str, Any]],
        indexes: Sequence[int],
        existing: Mapping[str, OnChainTask],
    ) -> list[PublishedTask]:
        self.publish_calls += 1
        if self.node_down:
            raise TxRpcError("the node did not answer")
        urls = [config_url(m, item) for m, item in zip(marks, items)]
        if payment * sum(1 for u in urls if u not in existing) > self.vault:
            raise BalanceTooLowError("payment", "the Vault balance is too low; nothing was published")
        out: list[PublishedTask] = []
        for url, mark, index in zip(urls, marks, indexes):
            if url in existing:
                t = self.tasks[existing[url].address]
            else:
                if self.fail_publish_after is not None and self.fail_publish_after <= 0:
                    raise PartialPublishError("publishing stopped: the node went away", out)
                if self.fail_publish_after is not None:
                    self.fail_publish_after -= 1
                attempt = mark.get("ogpu_prefect", {}).get("attempt", 0)
                t = FakeTask(
                    f"0x{len(self.tasks) + 1:040x}",
                    index,
                    url,
                    payment,
                    expiry,
                    self.clock.t,
                    self.script(index, attempt),
                )
                self.vault -= payment
                t.escrow = payment
                self.tasks[t.address] = t
                self.configs[url] += 1
                self._peaks()
            out.append(published(t))
        return out

    def find_published(self, key: str) -> dict[str, OnChainTask]:
        """What reconcile.find_published reads: every task of ours by config URL (the oldest)."""
        found: dict[str, OnChainTask] = {}
        for t in self.tasks.values():
            if json.loads(t.config_url.removeprefix("fake://"))["mark"].get("ogpu_prefect", {}).get("batch") == key:
                found.setdefault(t.config_url, OnChainTask(t.address, t.config_url, t.payment, t.expiry, "", 0))
        return found

    def step(self) -> None:
        """Providers act, expiries pass, the network's expiry handling returns what it does."""
        for t in self.tasks.values():
            age = self.clock.t - t.published_at
            if t.status is TaskStatus.NEW and t.act.kind != "untaken" and age >= t.act.after and self.now() < t.expiry:
                t.status = TaskStatus.ATTEMPTED if t.act.kind != "answer" else TaskStatus.RESPONDED
                if t.act.kind == "answer":
                    self._pay(t, t.act.price if t.act.price is not None else t.payment)
            if (
                self.network_returns_after is not None
                and t.status in (TaskStatus.ATTEMPTED, TaskStatus.RESPONDED)
                and self.now() >= t.expiry + self.network_returns_after
            ):
                self._refund(t, TaskStatus.EXPIRED)

    def _pay(self, t: FakeTask, price: int) -> None:
        assert t.escrow == t.payment and price <= t.payment, "paid twice, or more than the escrow"
        self.paid += price
        self.vault += t.escrow - price
        t.escrow = 0
        t.status = TaskStatus.FINALIZED
        self._peaks()

    def _refund(self, t: FakeTask, status: TaskStatus) -> None:
        self.vault += t.escrow
        t.escrow = 0
        t.status = status
        self._peaks()

    def _peaks(self) -> None:
        self.peak_escrow = max(self.peak_escrow, self.escrow_held())
        self.peak_open = max(self.peak_open, sum(1 for t in self.tasks.values() if t.status in OPEN))

    # ---- settling (escrow.settle's rules) ----

    def settle(self, tasks: Sequence[str]) -> EscrowReport:
        report = EscrowReport()
        if self.node_down:
            report.unreadable += list(dict.fromkeys(tasks))
            return report
        self.step()
        for a in dict.fromkeys(tasks):
            t = self.tasks[a]
            if t.status is TaskStatus.NEW:
                if self.cancel_reverts:
                    self.cancel_reverts -= 1
                    report.unreadable.append(a)
                    continue
                self._refund(t, TaskStatus.CANCELED)
                report.cancelled.append(a)
            elif (
                t.status in (TaskStatus.ATTEMPTED, TaskStatus.RESPONDED) and t.expiry <= self.now() and self.extensions
            ):
                self._refund(t, TaskStatus.EXPIRED)
                report.reclaimed.append(a)
            elif t.status is TaskStatus.FINALIZED:
                report.finalized.append(a)
            elif t.status is TaskStatus.CANCELED:
                report.cancelled.append(a)
            elif t.status is TaskStatus.EXPIRED:
                report.reclaimed.append(a)
            else:
                report.waiting[a] = t.expiry
        return report

    # ---- the audit ----

    def escrow_held(self) -> int:
        return sum(t.escrow for t in self.tasks.values())

    def stranded(self, reported_waiting: Sequence[str] = ()) -> int:
        """Wei of open tasks nobody reported as waiting for the network's expiry handling."""
        waiting = set(reported_waiting)
        return sum(t.escrow for t in self.tasks.values() if t.status in OPEN and t.address not in waiting)

    def duplicates(self) -> int:
        return sum(n - 1 for n in self.configs.values())

    def balanced(self) -> bool:
        """Every wei is in the Vault, in an escrow, or paid to a provider."""
        return self.vault + self.escrow_held() + self.paid == self.initial


def config_url(mark: dict[str, Any], item: TaskInput) -> str:
    """Content-addressed: the same input and (batch, input, attempt) mark give the same URL."""
    body = json.dumps({"mark": mark, "data": item.data}, sort_keys=True)
    return "fake://" + json.dumps({"mark": mark, "h": hashlib.sha256(body.encode()).hexdigest()[:16]})


def published(t: FakeTask) -> PublishedTask:
    return PublishedTask(
        index=t.index,
        address=t.address,
        source=SOURCE,
        payment=t.payment,
        expiry_time=t.expiry,
        config_url=t.config_url,
        published_at=t.published_at,
    )


class FakeTracker:
    """A Waiter over the fake: a task ends when its provider's act lands, or at its expiry."""

    def __init__(self, market: FakeMarket) -> None:
        self.market = market
        self.tracked: dict[str, PublishedTask] = {}
        self.closed = False

    def add(self, published: Sequence[PublishedTask], *, catch_up: bool = False) -> None:
        for p in published:
            assert p.address not in self.tracked, "tracked twice"
            self.tracked[p.address] = p

    def poll(self) -> list[TaskResult]:
        self.market.step()
        ended = []
        for a, p in list(self.tracked.items()):
            r = self.result(p)
            if r is not None:
                ended.append(r)
                del self.tracked[a]
        return ended

    def result(self, p: PublishedTask, *, final: bool = False) -> TaskResult | None:
        """The task's result once it ended (`final`: the wait's deadline passed, so now)."""
        t = self.market.tasks[p.address]
        if t.status is TaskStatus.FINALIZED:
            price = t.act.price if t.act.price is not None else t.payment
            return TaskResult(
                index=p.index, status="finalized", task=p.address, tasks=[p.address], provider=PROVIDER, payment=price
            )
        if t.status is TaskStatus.ATTEMPTED and t.act.kind in ("error", "reject"):
            reason = "provider error" if t.act.kind == "error" else "rejected"
            error = t.act.error if t.act.kind == "error" else "every response was refused"
            return TaskResult(
                index=p.index,
                status="failed",
                task=p.address,
                tasks=[p.address],
                chain_status=t.status,
                error=error,
                reason=reason,
            )
        if self.market.now() >= t.expiry or t.status in (TaskStatus.CANCELED, TaskStatus.EXPIRED) or final:
            return TaskResult(
                index=p.index,
                status="expired",
                task=p.address,
                tasks=[p.address],
                chain_status=t.status,
                error="expired" if self.market.now() >= t.expiry else "no decision before the deadline",
            )
        return None

    def close(self) -> None:
        self.closed = True


class FakeLedger:
    """batch.Ledger over the fake market."""

    def __init__(self, market: FakeMarket) -> None:
        self.market = market
        self.known: dict[str, None] = {}

    @property
    def tasks(self) -> list[str]:
        return list(self.known)

    def add(self, addresses: Sequence[str]) -> None:
        self.known.update(dict.fromkeys(addresses))

    def drop(self, addresses: Sequence[str]) -> None:
        for a in addresses:
            self.known.pop(a, None)

    def settle(self, tasks: Sequence[str] | None = None) -> EscrowReport:
        return self.market.settle(list(tasks) if tasks is not None else self.tasks)


def items(n: int) -> list[TaskInput]:
    return [TaskInput(function_name="echo", data={"i": i}) for i in range(n)]


def rounds_ports(
    market: FakeMarket, key: str
) -> tuple[Callable[..., list[PublishedTask]], Callable[..., list[TaskResult]]]:
    """run_batch's round publishing and waiting (task_ports.TaskMarket's and RoundTracker's
    callables), as its publish_tasks (reconciling from the chain) and wait_for_results (following
    the tasks until each ends or the wait's time is up) task runs do them."""

    def publish(batch: list[TaskInput], pay: int, ttl: int, indexes: list[int], attempt: int) -> list[PublishedTask]:
        return market.publish(
            batch,
            pay,
            market.now() + ttl,
            marks=batch_marks(key, indexes, attempt),
            indexes=indexes,
            existing=market.find_published(key),
        )

    def wait(tasks: list[PublishedTask], seconds: float) -> list[TaskResult]:
        tracker = FakeTracker(market)
        tracker.add(tasks)
        results: dict[str, TaskResult] = {}
        end = market.clock.t + seconds
        while len(results) < len(tasks) and market.clock.t < end:
            results.update({str(r.task): r for r in tracker.poll()})
            market.clock.sleep(0.5)
        for p in tasks:
            if p.address not in results:
                results[p.address] = tracker.result(p, final=True)  # type: ignore[assignment]
        return [results[p.address] for p in tasks]

    return publish, wait
