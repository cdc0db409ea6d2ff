"""The client's side of the protocol, without Prefect: validate, publish (pipelined, reconciled
so that nothing is published twice), wait (waiting.py), confirm, cancel and reclaim.
`ogpu_prefect.tasks` wraps this in Prefect tasks; `ogpu_prefect.batch` builds batches on it."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

from .chain.connection import Chain
from .chain.errors import (
    BalanceTooLowError,
    ExpiryOutOfRangeError,
    InvalidInputError,
    OGPUError,
    PaymentOutOfRangeError,
    SourceNotActiveInputError,
    UnknownSourceInputError,
)
from .chain.logs import created_address
from .chain.rpc import http_session
from .chain.tx import Call, PendingTx, Receipt
from .chain.types import DeliveryMethod, SourceParams, SourceStatus, TaskParams
from .delivery import DeliveryStrategy
from .models import PublishedTask, SourceSpec, TaskInput
from .reconcile import find_published
from .storage import PayloadStore, canonical_json, fetch_json, put_many
from .validation import check_address
from .waiting import ChangeCallback, Tracked, wait_for

log = logging.getLogger(__name__)

PUBLISH_CHUNK = 128
"""Tasks whose transactions are signed together, and whose configs a network store writes
together, while the previous chunk is sent (a local store writes every config first)."""
AWAIT_SLICE = 1000
"""Published tasks whose receipts are awaited and read together."""
MIN_TTL = 10
"""Seconds an expiry must lie ahead when publishing: room for the transaction to be mined."""
CONFIRM_GAS = 400_000
"""Gas limit of a confirmation whose estimate failed (the state moved between decide and send)."""


class PartialPublishError(OGPUError):
    """Publishing stopped after some tasks were on chain: `published` lists them (their escrow is
    held), `__cause__` says why it stopped."""

    def __init__(self, message: str, published: list[PublishedTask]) -> None:
        self.published = published
        super().__init__(message)


@dataclass(frozen=True)
class SourceTerms:
    address: str
    client: str
    status: SourceStatus
    min_payment: int
    max_expiry_duration: int
    delivery_method: DeliveryMethod


class OGPUClient:
    """One client account on one network, with a payload store. `signer`: a private key, an
    eth_account `LocalAccount`, or anything with `address` and `sign_transaction`. `fetch` reads
    response payloads (default: over one kept-alive session, from any URL: pass `trusted_origins`
    to refuse others, as `ogpu_prefect.tasks` does from the storage block)."""

    def __init__(
        self,
        chain: Chain,
        signer: Any,
        store: PayloadStore | None = None,
        *,
        fetch: Callable[[str], Any] | None = None,
        trusted_origins: Iterable[str] | None = None,
    ) -> None:
        self.chain = chain
        self.sender = chain.sender(signer)
        self.store = store
        allowed = list(trusted_origins) if trusted_origins is not None else None
        self.fetch = fetch or partial(fetch_json, session=http_session(), allowed_origins=allowed)

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
        self.source_terms(source)
        url = self._store().put_json(spec.metadata(), field="metadata")
        return self.sender.transact(self.chain.nexus.update_source(source, self._source_params(spec, url)))

    def inactivate_source(self, source: str) -> Receipt:
        self.source_terms(source)
        return self.sender.transact(self.chain.nexus.inactivate_source(source))

    def _source_params(self, spec: SourceSpec, metadata_url: str) -> SourceParams:
        return SourceParams(
            self.address,
            metadata_url,
            int(spec.environments),
            spec.min_payment,
            spec.min_available_lockup,
            spec.max_expiry_duration,
            False,
            "",
            spec.delivery_method,
            self.chain.timestamp(),
        )

    def source_terms(self, source: str) -> SourceTerms:
        """The terms tasks are published under. Unknown source: UnknownSourceInputError."""
        source = check_address("source", source, UnknownSourceInputError)
        if not self.chain.nexus.get_source_id(source):
            raise UnknownSourceInputError("source", f"{source} is not a source of {self.chain.network.name}")
        s = self.chain.source(source)
        status, params = self.chain.read_many([s.read.get_status(), s.read.get_source_params()])
        return SourceTerms(
            s.address, params.client, status, params.minPayment, params.maxExpiryDuration, params.deliveryMethod
        )

    # ---- publishing ----

    def check_batch(self, terms: SourceTerms, count: int, payment: int, expiry_time: int) -> None:
        """Everything publishTask would refuse, refused here first with a typed error naming the
        field, before any payload is written or transaction sent."""
        if terms.status is not SourceStatus.ACTIVE:
            raise SourceNotActiveInputError("source", f"{terms.address} is inactive")
        if isinstance(payment, bool) or not isinstance(payment, int):
            raise PaymentOutOfRangeError("payment", f"an int of wei, not {type(payment).__name__}")
        if payment < terms.min_payment:
            raise PaymentOutOfRangeError(
                "payment", f"{payment} wei is below the source's minPayment ({terms.min_payment} wei)"
            )
        if payment >= 2**96:
            raise PaymentOutOfRangeError("payment", "above 2^96-1 wei")
        if isinstance(expiry_time, bool) or not isinstance(expiry_time, int):
            raise ExpiryOutOfRangeError("expiry_time", f"an int (unix seconds), not {type(expiry_time).__name__}")
        now = self.chain.now()
        if expiry_time < now + MIN_TTL:
            raise ExpiryOutOfRangeError(
                "expiry_time", f"{expiry_time} is in the past or less than {MIN_TTL}s ahead (chain time {now})"
            )
        if expiry_time > now + terms.max_expiry_duration:
            raise ExpiryOutOfRangeError(
                "expiry_time", f"more than the source's maxExpiryDuration ({terms.max_expiry_duration}s) ahead"
            )
        balance = self.chain.vault.balance_of(self.address)
        if balance < count * payment:
            raise BalanceTooLowError(
                "payment",
                f"{count} tasks x {payment} wei = {count * payment} wei, but the "
                f"Vault balance of {self.address} is {balance} wei",
            )

    def config_bodies(
        self, inputs: Sequence[TaskInput], marks: Sequence[dict[str, Any]], indexes: Sequence[int]
    ) -> list[bytes]:
        """Each task's config as canonical JSON; the marks make each config unique (and
        findable). Typed errors name the input that is not JSON or too big."""
        return [
            canonical_json(inp.to_config(**mark), field=f"inputs[{i}].data")
            for inp, mark, i in zip(inputs, marks, indexes)
        ]

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
        indexes: Sequence[int] | None = None,
        reconcile_from_block: int | None = None,
    ) -> list[PublishedTask]:
        """Publishes one task per input, pipelined, and returns them in input order.

        `marks` (one dict per input, merged into its config) make each config URL unique. With
        `reconcile_from_block`, tasks of ours already published since that block with the same
        config URL are reused, not published again: a retry after a crash publishes nothing twice.
        A failure after the first transaction raises PartialPublishError listing what landed."""
        terms = self.source_terms(source)
        indexes = list(indexes) if indexes is not None else list(range(len(inputs)))
        marks = list(marks) if marks is not None else [{} for _ in inputs]
        self.check_batch(terms, len(inputs), payment, expiry_time)
        bodies = self.config_bodies(inputs, marks, indexes)  # every input checked before any write
        store = self._store()
        existing = (
            {
                url: tasks[0]
                for url, tasks in find_published(self.chain, self.address, terms.address, reconcile_from_block).items()
            }
            if reconcile_from_block is not None
            else {}
        )
        out: dict[int, PublishedTask] = {}
        sent: list[tuple[int, str, float, PendingTx]] = []
        # Pipelined: this thread signs a chunk's transactions (and writes its configs, for a
        # network store) while a second thread sends, in nonce order, everything signed since its
        # last send (bigger batches when the node is the bottleneck: anvil mines fewer, fuller
        # blocks). Writes stay on this thread: a third (writer) thread measured no faster here.
        sending = ThreadPoolExecutor(1, thread_name_prefix="ogpu-send")
        ready: list[tuple[int, str, PendingTx]] = []
        in_flight: tuple[Future[None], list[tuple[int, str, float, PendingTx]]] | None = None

        def flush(block: bool) -> None:  # sends what is ready unless a send is under way
            nonlocal in_flight
            if in_flight is not None and (block or in_flight[0].done()):
                future, batch = in_flight
                in_flight = None
                future.result()
                sent.extend(batch)
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
        gas: int | None = None
        failure: BaseException | None = None
        try:
            # The key's lock from the first nonce to the last broadcast: no other sender of this
            # key on this machine takes our nonces meanwhile (chain/nonces.py).
            with self.sender.exclusive():
                for start in range(0, len(bodies), PUBLISH_CHUNK):
                    span = range(start, min(start + PUBLISH_CHUNK, len(bodies)))
                    if len(urls) < span.stop:
                        urls += put_many(store, bodies[len(urls) : len(urls) + write_ahead])
                    todo = []
                    for i in span:
                        found = existing.get(urls[i])
                        if found is not None:
                            out[i] = PublishedTask(
                                index=indexes[i],
                                address=found.address,
                                source=terms.address,
                                payment=found.payment,
                                expiry_time=found.expiry_time,
                                config_url=urls[i],
                                tx_hash=found.tx_hash,
                                published_at=time.time(),
                            )
                        else:
                            todo.append((i, urls[i]))
                    if not todo:
                        continue
                    calls = [
                        self.chain.controller.publish_task(TaskParams(terms.address, url, expiry_time, payment))
                        for _, url in todo
                    ]
                    if gas is None:
                        gas = self.sender.estimate(calls[:1])[0]  # same shape for all: one estimate serves
                    ready += [(i, url, p) for (i, url), p in zip(todo, self.sender.sign(calls, gas))]
                    flush(block=False)
                while ready or in_flight is not None:
                    flush(block=True)
        except BaseException as e:
            failure = e
            self.sender.resync_nonce()  # transactions signed but never sent leave a gap in the local nonces
        finally:  # even when a later step fails, what was sent is awaited: nothing left in flight
            if in_flight is not None and in_flight[0].exception() is None:
                sent.extend(in_flight[1])
            sending.shutdown()
        try:
            reverted = self._await_published(sent, out, terms.address, payment, expiry_time, indexes)
        except Exception as e:  # sent, but their outcome unknown: a reconciling retry finds them
            landed = [out[i] for i in sorted(out)]
            raise PartialPublishError(
                f"{len(sent)} publishTask transaction(s) were sent but their receipts could "
                f"not be read ({e}); a retry with the same marks finds what landed",
                landed,
            ) from (failure or e)
        landed = [out[i] for i in sorted(out)]
        if failure is not None:
            if landed and isinstance(failure, Exception):
                raise PartialPublishError(
                    f"publishing stopped after {len(landed)} of {len(bodies)} task(s) were published: {failure}", landed
                ) from failure
            raise failure
        if reverted is not None:
            error = self.sender.explain(reverted)
            if landed:
                raise PartialPublishError(
                    f"{error} ({len(landed)} of {len(bodies)} task(s) published)", landed
                ) from error
            raise error
        return [out[i] for i in range(len(bodies))]

    def _await_published(
        self,
        sent: list[tuple[int, str, float, PendingTx]],
        out: dict[int, PublishedTask],
        source: str,
        payment: int,
        expiry_time: int,
        indexes: Sequence[int],
    ) -> Receipt | None:
        """Waits for every sent publishTask, a slice at a time (a receipt is kept only until its
        task address is read: 10,000 receipts with their logs are ~30 MB), into `out`. Returns
        the first reverted receipt, once all are in: nothing is left unaccounted for."""
        reverted = None
        for start in range(0, len(sent), AWAIT_SLICE):
            part = sent[start : start + AWAIT_SLICE]
            for (i, url, sent_at, _), receipt in zip(part, self.sender.wait([p for *_, p in part], check=False)):
                if receipt.status != 1:
                    reverted = reverted or receipt
                    continue
                task = created_address(receipt, "TaskPublished", "task", self.chain.network.nexus)
                out[i] = PublishedTask(
                    index=indexes[i],
                    address=task,
                    source=source,
                    payment=payment,
                    expiry_time=expiry_time,
                    config_url=url,
                    tx_hash=receipt.tx_hash,
                    published_at=sent_at,
                )
        return reverted

    # ---- waiting ----

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
        or the wall-clock `deadline` passes (waiting.py). CONFIRM decisions are sent as they come."""
        return wait_for(
            self,
            published,
            strategy,
            deadline=deadline,
            from_block=from_block,
            poll_interval=poll_interval,
            on_change=on_change,
        )

    # ---- confirm, cancel, reclaim ----

    def confirm_responses(self, responses: Sequence[str], *, check: bool = True) -> list[Receipt]:
        return self._pipelined([self.chain.controller.confirm_response(r) for r in responses], check, CONFIRM_GAS)

    def cancel_tasks(self, tasks: Sequence[str], *, check: bool = True) -> list[Receipt]:
        """Cancels NEW tasks (their escrow returns). With `check=False` a failed one does not
        raise: its receipt says (a task attempted meanwhile is not cancellable)."""
        return self._pipelined([self.chain.controller.cancel_task(t) for t in tasks], check, 200_000)

    def reclaim_expired(self, tasks: Sequence[str], *, check: bool = True) -> list[Receipt]:
        """Takes back the escrow of expired, unfinished tasks: our devnet's `reclaimExpired`, which
        the real network does not have (OGPUError there; see escrow.py)."""
        if not self.chain.has_extensions():
            raise OGPUError(
                f"{self.chain.network.name} has no reclaimExpired: the escrow of expired tasks is "
                f"returned by the network's own expiry handling"
            )
        return self._pipelined([self.chain.controller.reclaim_expired(t) for t in tasks], check, 200_000)

    def _pipelined(self, calls: list[Call], check: bool, fallback_gas: int) -> list[Receipt]:
        """Sends `calls` pipelined; with `check`, a revert raises its typed error."""
        if not calls:
            return []
        try:
            gas: int = self.sender.estimate(calls[:1])[0]
        except OGPUError:
            if check:
                raise
            gas = fallback_gas  # the first would revert; the others may not
        return self.sender.wait(self.sender.send(calls, gas), check=check)
