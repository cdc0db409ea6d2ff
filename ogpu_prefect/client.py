"""The client's side of the protocol, without Prefect: validate, publish (pipelined, reconciled
so that nothing is published twice), watch tasks through Nexus events, let a delivery strategy
decide, confirm, cancel and reclaim. `ogpu_prefect.tasks` wraps this in Prefect tasks."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from .chain.connection import Chain
from .chain.errors import (
    BalanceTooLowError,
    ExpiryOutOfRangeError,
    InvalidInputError,
    PaymentOutOfRangeError,
    SourceNotActiveInputError,
    TxRevertError,
    UnknownSourceInputError,
)
from .chain.events import created_address, decode_logs, iter_logs, topic
from .chain.rpc import http_session
from .chain.tx import Call, PendingTx, Receipt, Signer
from .chain.types import DeliveryMethod, SourceParams, SourceStatus, TaskParams, TaskStatus
from .delivery import Decision, DeliveryStrategy, ResponseView, TaskView
from .models import PublishedTask, SourceSpec, TaskInput
from .storage import PayloadStore, canonical_json, fetch_json, put_many

log = logging.getLogger(__name__)

PUBLISH_CHUNK = 128
"""Tasks whose transactions are signed together, and whose configs a network store writes
together, while the previous chunk is sent (a local store writes every config first)."""
AWAIT_SLICE = 1000
"""Published tasks whose receipts are awaited and read together."""
MIN_TTL = 10
"""Seconds an expiry must lie ahead when publishing: room for the transaction to be mined."""
SWEEP_S = 1.0
"""Seconds between the waiting loop's passes over every undecided task. In between, only tasks
with news or with responses (a response window may close) are decided: a pass over 10,000 tasks
costs ~100 ms of CPU."""

WATCHED_EVENTS = ("Attempted", "ResponseSubmitted", "TaskStatusChanged")


@dataclass(frozen=True)
class SourceTerms:
    address: str
    client: str
    status: SourceStatus
    min_payment: int
    max_expiry_duration: int
    delivery_method: DeliveryMethod


@dataclass(eq=False)  # kept in sets, by identity
class Tracked:
    """What the waiting loop knows of one task."""

    published: PublishedTask
    status: TaskStatus = TaskStatus.NEW
    attempt_count: int = 0
    responses: dict[str, ResponseView] = field(default_factory=dict)
    winner: str | None = None
    outcome: Decision | None = None
    decided_at: float | None = None
    note: str = ""


ChangeCallback = Callable[[str, Tracked], None]


class OGPUClient:
    """One client account on one network, with a payload store."""

    def __init__(self, chain: Chain, signer: Signer | Any, store: PayloadStore | None = None,
                 *, fetch: Callable[[str], Any] | None = None) -> None:
        self.chain = chain
        self.sender = chain.sender(signer)
        self.store = store
        # Results are read over one kept-alive session (a connection per result cost the client,
        # and the provider's file server, a TCP handshake and a thread each).
        self.fetch = fetch or partial(fetch_json, session=http_session())

    @property
    def address(self) -> str:
        return self.sender.address

    def __repr__(self) -> str:
        return f"OGPUClient({self.address} on {self.chain.network.name})"

    # ---- sources ----

    def publish_source(self, spec: SourceSpec) -> str:
        """Uploads the metadata and publishes the source; returns its address."""
        if not spec.environments:
            raise InvalidInputError("cpu/nvidia/amd", "a source needs at least one compose URL")
        url = self._store().put_json(spec.metadata(), field="metadata")
        receipt = self.sender.transact(self.chain.nexus.publish_source(self._source_params(spec, url)))
        return created_address(receipt, "SourcePublished", "source", self.chain.network.nexus)

    def update_source(self, source: str, spec: SourceSpec) -> Receipt:
        url = self._store().put_json(spec.metadata(), field="metadata")
        return self.sender.transact(self.chain.nexus.update_source(source, self._source_params(spec, url)))

    def inactivate_source(self, source: str) -> Receipt:
        return self.sender.transact(self.chain.nexus.inactivate_source(source))

    def _source_params(self, spec: SourceSpec, metadata_url: str) -> SourceParams:
        return SourceParams(self.address, metadata_url, int(spec.environments), spec.min_payment,
                            spec.min_available_lockup, spec.max_expiry_duration, False, "", spec.delivery_method,
                            self.chain.timestamp())

    def source_terms(self, source: str) -> SourceTerms:
        """The terms tasks are published under. Unknown source: UnknownSourceInputError."""
        try:
            known = self.chain.nexus.get_source_id(source)
        except ValueError:
            raise UnknownSourceInputError("source", f"{source!r} is not an address") from None
        if not known:
            raise UnknownSourceInputError("source", f"{source} is not a source of {self.chain.network.name}")
        s = self.chain.source(source)
        status, params = self.chain.read_many([(s, "getStatus", ()), (s, "getSourceParams", ())])
        return SourceTerms(s.address, params.client, status, params.minPayment, params.maxExpiryDuration,
                           params.deliveryMethod)

    # ---- publishing ----

    def check_batch(self, terms: SourceTerms, count: int, payment: int, expiry_time: int) -> None:
        """Everything publishTask would refuse, refused here first with a typed error naming the
        field, before any payload is written or transaction sent."""
        if terms.status is not SourceStatus.ACTIVE:
            raise SourceNotActiveInputError("source", f"{terms.address} is inactive")
        if payment < terms.min_payment:
            raise PaymentOutOfRangeError("payment", f"{payment} wei is below the source's minPayment "
                                                    f"({terms.min_payment} wei)")
        if payment >= 2**96:
            raise PaymentOutOfRangeError("payment", "above 2^96-1 wei")
        now = self.chain.now()
        if expiry_time < now + MIN_TTL:
            raise ExpiryOutOfRangeError("expiry_time", f"{expiry_time} is in the past or less than {MIN_TTL}s ahead "
                                                       f"(chain time {now})")
        if expiry_time > now + terms.max_expiry_duration:
            raise ExpiryOutOfRangeError("expiry_time", f"more than the source's maxExpiryDuration "
                                                       f"({terms.max_expiry_duration}s) ahead")
        balance = self.chain.vault.balance_of(self.address)
        if balance < count * payment:
            raise BalanceTooLowError("payment", f"{count} tasks x {payment} wei = {count * payment} wei, but the "
                                                f"Vault balance of {self.address} is {balance} wei")

    def config_bodies(self, inputs: Sequence[TaskInput], marks: Sequence[dict[str, Any]],
                      indexes: Sequence[int]) -> list[bytes]:
        """Each task's config as canonical JSON; the marks make each config unique (and
        findable). Typed errors name the input that is not JSON or too big."""
        return [canonical_json(inp.to_config(**mark), field=f"inputs[{i}].data")
                for inp, mark, i in zip(inputs, marks, indexes)]

    def _store(self) -> PayloadStore:
        if self.store is None:
            raise InvalidInputError("storage", "this operation writes payloads: give the client a store")
        return self.store

    def publish_tasks(
        self,
        source: str,
        inputs: Sequence[TaskInput],
        payment: int,
        expiry_time: int,
        *,
        marks: Sequence[dict[str, Any]] | None = None,
        reconcile_from_block: int | None = None,
        indexes: Sequence[int] | None = None,
    ) -> list[PublishedTask]:
        """Publishes one task per input, pipelined, and returns them in input order.

        `marks` (one dict per input, merged into its config) make each config URL unique. With
        `reconcile_from_block`, tasks of ours already published since that block with the same
        config URL are reused, not published again: a retry after a crash publishes nothing twice.
        """
        terms = self.source_terms(source)
        indexes = list(indexes) if indexes is not None else list(range(len(inputs)))
        marks = list(marks) if marks is not None else [{} for _ in inputs]
        self.check_batch(terms, len(inputs), payment, expiry_time)
        bodies = self.config_bodies(inputs, marks, indexes)  # every input checked before any write
        store = self._store()
        existing = self.find_published(source, reconcile_from_block) if reconcile_from_block is not None else {}
        out: dict[int, PublishedTask] = {}
        sent: list[tuple[int, str, float, PendingTx]] = []
        gas: int | None = None
        # Pipelined: this thread signs a chunk's transactions (and writes its configs, for a
        # network store) while a second thread sends, in nonce order, everything signed since its
        # last send (bigger batches when the node is the bottleneck: anvil mines fewer, fuller
        # blocks). Writes stay on this thread: a third (writer) thread measured no faster here.
        sending = ThreadPoolExecutor(1, thread_name_prefix="ogpu-send")
        ready: list[tuple[int, str, PendingTx]] = []
        in_flight: tuple[Future[None], list[tuple[int, str, float, PendingTx]]] | None = None

        def settle() -> None:  # the send in flight is done: its transactions are with the node
            nonlocal in_flight
            if in_flight is not None:
                future, batch = in_flight
                in_flight = None
                future.result()
                sent.extend(batch)

        def flush(block: bool) -> None:  # sends what is ready unless a send is under way
            nonlocal in_flight
            if in_flight is not None and (block or in_flight[0].done()):
                settle()
            if in_flight is None and ready:
                sent_at = time.time()
                batch = [(i, url, sent_at, p) for i, url, p in ready]
                ready.clear()
                in_flight = (sending.submit(self.sender.broadcast, [p for *_, p in batch]), batch)

        # Local files are all written before the send thread starts (~15 us each): a file create
        # releases the GIL, and getting it back from a busy send thread costs up to a switch
        # interval (5 ms). Network stores write a chunk at a time, in parallel with the sends.
        write_ahead = len(bodies) if not getattr(store, "parallel", True) else PUBLISH_CHUNK
        urls: list[str] = []
        try:
            for start in range(0, len(bodies), PUBLISH_CHUNK):
                span = range(start, min(start + PUBLISH_CHUNK, len(bodies)))
                if len(urls) < span.stop:
                    urls += put_many(store, bodies[len(urls):len(urls) + write_ahead])
                todo = []
                for i in span:
                    url = urls[i]
                    if url in existing:
                        out[i] = PublishedTask(index=indexes[i], address=existing[url], source=terms.address,
                                               payment=payment, expiry_time=expiry_time, config_url=url,
                                               published_at=time.time())
                    else:
                        todo.append((i, url))
                if not todo:
                    continue
                calls = [self.chain.controller.publish_task(TaskParams(terms.address, url, expiry_time, payment))
                         for _, url in todo]
                if gas is None:
                    gas = self.sender.estimate(calls[:1])[0]  # same shape for all: one estimate serves
                ready += [(i, url, p) for (i, url), p in zip(todo, self.sender.sign(calls, gas))]
                flush(block=False)
            while ready or in_flight is not None:
                flush(block=True)
        except BaseException:
            self.sender.resync_nonce()  # transactions signed but never sent leave a gap in the local nonces
            raise
        finally:  # even when a later step fails, what was sent is awaited: nothing left in flight
            if in_flight is not None and in_flight[0].exception() is None:
                sent.extend(in_flight[1])
            sending.shutdown()
            reverted = self._await_published(sent, out, terms.address, payment, expiry_time, indexes)
        if reverted is not None:
            raise self.sender.explain(reverted)
        return [out[i] for i in range(len(bodies))]

    def _await_published(self, sent: list[tuple[int, str, float, PendingTx]], out: dict[int, PublishedTask],
                         source: str, payment: int, expiry_time: int, indexes: Sequence[int]) -> Receipt | None:
        """Waits for every sent publishTask, a slice at a time (a receipt is kept only until its
        task address is read: 10,000 receipts with their logs are ~30 MB), into `out`. Returns
        the first reverted receipt, once all are in: nothing is left unaccounted for."""
        reverted = None
        for start in range(0, len(sent), AWAIT_SLICE):
            part = sent[start:start + AWAIT_SLICE]
            for (i, url, sent_at, _), receipt in zip(part, self.sender.wait([p for *_, p in part], check=False)):
                if receipt.status != 1:
                    reverted = reverted or receipt
                    continue
                task = created_address(receipt, "TaskPublished", "task", self.chain.network.nexus)
                out[i] = PublishedTask(index=indexes[i], address=task, source=source, payment=payment,
                                       expiry_time=expiry_time, config_url=url, tx_hash=receipt.tx_hash,
                                       published_at=sent_at)
        return reverted

    def find_published(self, source: str, from_block: int) -> dict[str, str]:
        """config URL -> task, for this client's tasks of `source` published since `from_block`."""
        events = self.chain.events(["TaskPublished"], from_block)
        tasks = [e["task"] for e in events if e["source"].lower() == source.lower()]
        if not tasks:
            return {}
        reads = []
        for t in tasks:
            reads += [(self.chain.task(t), "taskParams", ()), (self.chain.task(t), "getClient", ())]
        values = self.chain.read_many(reads)
        found = {}
        for k, t in enumerate(tasks):
            params, client = values[2 * k], values[2 * k + 1]
            if client == self.address:
                found[params[1]] = t
        return found

    # ---- watching and deciding ----

    def wait_for(
        self,
        published: Sequence[PublishedTask],
        strategy: DeliveryStrategy,
        *,
        deadline: float,
        from_block: int,
        poll_interval: float = 0.1,
        on_change: ChangeCallback | None = None,
    ) -> dict[str, Tracked]:
        """Follows the tasks through Nexus events until each is decided (ACCEPT / FAIL), expired,
        or the wall-clock `deadline` passes. CONFIRM decisions are sent, pipelined, as they come."""
        tracked = {p.address: Tracked(p) for p in published}
        undecided = list(tracked.values())
        watcher = _EventCursor(self.chain, from_block)
        notify = on_change or (lambda kind, t: None)
        last_sweep = 0.0
        while True:
            touched = self._apply_events(tracked, watcher.poll(), notify)
            now_chain = self.chain.now()
            if time.monotonic() - last_sweep >= SWEEP_S:
                last_sweep = time.monotonic()
                undecided = [t for t in undecided if t.outcome is None or t.outcome.kind == Decision.CONFIRM]
                due: Iterable[Tracked] = undecided
            else:
                due = touched | {t for t in undecided if t.responses}
            confirms: list[Tracked] = []
            for t in due:
                if t.outcome is not None:
                    continue
                view = self._view(t)
                decision = strategy.on_terminal(view) if view.status.is_final else strategy.decide(view)
                if decision.kind == Decision.CONFIRM:
                    confirms.append(t)
                    t.outcome = decision  # provisional: settled by the confirmation's receipt
                elif decision.kind in (Decision.ACCEPT, Decision.FAIL):
                    self._settle(t, decision, notify)
                elif now_chain >= t.published.expiry_time:
                    self._settle(t, Decision.fail("expired"), notify, kind="expired")
            if confirms:
                self._confirm(confirms, notify)
            if all(t.outcome is not None for t in tracked.values()) or time.time() >= deadline:
                return tracked
            time.sleep(poll_interval)

    def _view(self, t: Tracked) -> TaskView:
        return TaskView(t.published.address, t.status, t.published.payment, t.published.expiry_time,
                        list(t.responses.values()), t.attempt_count, t.winner)

    def _settle(self, t: Tracked, decision: Decision, notify: ChangeCallback, kind: str | None = None) -> None:
        if decision.kind == Decision.ACCEPT and decision.response is not None:
            decision.response.load()  # the result travels with the outcome, not behind a URL
        t.outcome = decision
        t.decided_at = time.time()
        t.note = decision.reason
        notify(kind or ("decided" if decision.kind == Decision.ACCEPT else "failed"), t)

    def _apply_events(self, tracked: dict[str, Tracked], events: list[Any], notify: ChangeCallback) -> set[Tracked]:
        """Applies polled events to the tasks they name; returns those tasks."""
        touched: set[Tracked] = set()
        new_responses: list[tuple[Tracked, str]] = []
        finalized: list[Tracked] = []
        for ev in events:
            t = tracked.get(ev["task"]) if "task" in ev.args else None
            if t is None:
                continue
            touched.add(t)
            if ev.name == "Attempted":
                t.attempt_count += 1
                notify("attempted", t)
            elif ev.name == "ResponseSubmitted":
                new_responses.append((t, ev["response"]))
            elif ev.name == "TaskStatusChanged":
                t.status = TaskStatus(ev["status"])
                if t.status is TaskStatus.FINALIZED:
                    finalized.append(t)
                elif t.status is TaskStatus.EXPIRED:
                    notify("expired", t)
        if new_responses:
            params = self.chain.read_many([(self.chain.response(r), "getResponseParams", ()) for _, r in new_responses])
            seen = time.time()
            for (t, r), p in zip(new_responses, params):
                t.responses[r] = ResponseView(r, p.provider, p.payment, p.data, seen, self.fetch)
                notify("responded", t)
        if finalized:
            winners = self.chain.read_many([(self.chain.task(t.published.address), "winningProvider", ())
                                            for t in finalized])
            for t, w in zip(finalized, winners):
                t.winner = w
                notify("finalized", t)
        return touched

    def _confirm(self, confirms: list[Tracked], notify: ChangeCallback) -> None:
        calls = [self.chain.controller.confirm_response(t.outcome.response.address) for t in confirms]  # type: ignore[union-attr]
        try:
            gas = self.sender.estimate(calls[:1])[0]
        except TxRevertError as e:
            gas = 400_000
            log.info("confirmation estimate failed (%s); sending with a fixed limit", e)
        receipts = self.sender.wait(self.sender.send(calls, gas), check=False)
        for t, receipt in zip(confirms, receipts):
            decision = t.outcome
            assert decision is not None and decision.response is not None
            if receipt.status == 1:
                t.status, t.winner = TaskStatus.FINALIZED, decision.response.provider
                self._settle(t, Decision.accept(decision.response), notify)
                notify("finalized", t)
            else:
                err = self.sender.explain(receipt)
                t.outcome = None  # undecided again: the next poll sees the real state
                log.warning("confirming %s for task %s failed: %s", decision.response.address,
                            t.published.address, err)

    # ---- cleanup and vault ----

    def cancel_tasks(self, tasks: Sequence[str]) -> list[Receipt]:
        return self._pipelined([self.chain.controller.cancel_task(t) for t in tasks])

    def reclaim_expired(self, tasks: Sequence[str]) -> list[Receipt]:
        return self._pipelined([self.chain.controller.reclaim_expired(t) for t in tasks])

    def confirm_responses(self, responses: Sequence[str]) -> list[Receipt]:
        return self._pipelined([self.chain.controller.confirm_response(r) for r in responses])

    def _pipelined(self, calls: list[Call]) -> list[Receipt]:
        if not calls:
            return []
        return self.sender.transact_many(calls, self.sender.estimate(calls[:1])[0])


class _EventCursor:
    """Nexus lifecycle events, polled in block ranges from a starting block."""

    def __init__(self, chain: Chain, from_block: int) -> None:
        self.chain = chain
        self.next_block = from_block
        self.topics = [topic("Nexus", n) for n in WATCHED_EVENTS]

    def poll(self) -> list[Any]:
        head = self.chain.block_number()
        if head < self.next_block:
            return []
        logs = list(iter_logs(self.chain.rpc, self.chain.network.nexus, self.topics, self.next_block, head))
        self.next_block = head + 1
        return decode_logs(logs, WATCHED_EVENTS)
