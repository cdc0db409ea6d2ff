"""The client's side of the protocol, without Prefect: validate, publish (pipelined, reconciled
so that nothing is published twice), wait (waiting.py), confirm, cancel and reclaim.
`ogpu_prefect.tasks` wraps this in Prefect tasks; `ogpu_prefect.batch` builds batches on it."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from . import validation
from .chain import errors
from .chain.connection import Chain
from .chain.logs import created_address
from .chain.structs import SourceParams
from .chain.tx import Call, Receipt
from .chain.types import DeliveryMethod, SourceStatus
from .delivery import DeliveryStrategy
from .models import PublishedTask, SourceSpec, TaskInput
from .publishing import Publication
from .reconcile import OnChainTask, find_published
from .storage import PayloadStore, canonical_json, fetch_json
from .waiting import ChangeCallback, Tracked, Waiter

log = logging.getLogger(__name__)

MIN_TTL = 10
"""Seconds an expiry must lie ahead when publishing: room for the transaction to be mined."""
CONFIRM_GAS = 400_000
"""Gas limit of a confirmation whose estimate failed (the state moved between decide and send)."""


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
    response payloads, from several threads at once (default: over one kept-alive session, from
    any URL: pass `trusted_origins` to refuse others, as `ogpu_prefect.tasks` does from the
    storage block)."""

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
        if store is not None and not callable(getattr(store, "put_body", None)):
            raise errors.InvalidInputError("store", f"expected a PayloadStore, not {type(store).__name__}")
        self.sender = chain.sender(validation.check_signer("signer", signer))
        self.store = store
        allowed = list(trusted_origins) if trusted_origins is not None else None
        self.fetch = fetch or partial(fetch_json, allowed_origins=allowed)

    @property
    def address(self) -> str:
        return self.sender.address

    def __repr__(self) -> str:
        return f"OGPUClient({self.address} on {self.chain.network.name})"

    # ---- sources ----

    def publish_source(self, spec: SourceSpec | dict[str, Any]) -> str:
        """Uploads the metadata and publishes the source; returns its address."""
        spec = validation.parse_model(SourceSpec, spec, "spec")
        if not spec.environments:
            raise errors.InvalidInputError("cpu/nvidia/amd", "a source needs at least one compose URL")
        url = self._store().put_json(spec.metadata(), field="metadata")
        receipt = self.sender.transact(self.chain.nexus.publish_source(self._source_params(spec, url)))
        return created_address(receipt, "SourcePublished", "source", self.chain.network.nexus)

    def update_source(self, source: str, spec: SourceSpec | dict[str, Any]) -> Receipt:
        spec = validation.parse_model(SourceSpec, spec, "spec")
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
        """The terms tasks are published under. Unknown source: errors.UnknownSourceInputError."""
        source = validation.check_address("source", source, errors.UnknownSourceInputError)
        if not self.chain.nexus.get_source_id(source):
            raise errors.UnknownSourceInputError("source", f"{source} is not a source of {self.chain.network.name}")
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
            raise errors.SourceNotActiveInputError("source", f"{terms.address} is inactive")
        if isinstance(payment, bool) or not isinstance(payment, int):
            raise errors.PaymentOutOfRangeError("payment", f"an int of wei, not {type(payment).__name__}")
        if payment < terms.min_payment:
            raise errors.PaymentOutOfRangeError(
                "payment", f"{payment} wei is below the source's minPayment ({terms.min_payment} wei)"
            )
        if payment >= 2**96:
            raise errors.PaymentOutOfRangeError("payment", "above 2^96-1 wei")
        if isinstance(expiry_time, bool) or not isinstance(expiry_time, int):
            raise errors.ExpiryOutOfRangeError(
                "expiry_time", f"an int (unix seconds), not {type(expiry_time).__name__}"
            )
        now = self.chain.now()
        if expiry_time < now + MIN_TTL:
            raise errors.ExpiryOutOfRangeError(
                "expiry_time", f"{expiry_time} is in the past or less than {MIN_TTL}s ahead (chain time {now})"
            )
        if expiry_time > now + terms.max_expiry_duration:
            raise errors.ExpiryOutOfRangeError(
                "expiry_time", f"more than the source's maxExpiryDuration ({terms.max_expiry_duration}s) ahead"
            )
        balance = self.chain.vault.balance_of(self.address)
        if balance < count * payment:
            raise errors.BalanceTooLowError(
                "payment",
                f"{count} tasks x {payment} wei = {count * payment} wei, but the "
                f"Vault balance of {self.address} is {balance} wei",
            )

    def config_bodies(
        self, inputs: Sequence[TaskInput], marks: Sequence[dict[str, Any]], indexes: Sequence[int]
    ) -> list[bytes]:
        """Each task's config as canonical JSON; the marks make each config unique (and
        findable). Typed errors name the input that is not JSON, too big, or holds a key."""
        bodies = []
        for inp, mark, i in zip(inputs, marks, indexes):
            if not isinstance(inp, TaskInput):
                raise errors.InvalidInputError(f"inputs[{i}]", f"expected a TaskInput, not {type(inp).__name__}")
            config = inp.to_config(**mark)
            validation.refuse_secret(f"inputs[{i}]", config)  # a config is public: anyone may read it
            bodies.append(canonical_json(config, field=f"inputs[{i}].data"))
        return bodies

    def _store(self) -> PayloadStore:
        if self.store is None:
            raise errors.InvalidInputError("storage", "this operation writes payloads: give the client a store")
        return self.store

    def publish_tasks(
        self,
        source: str | SourceTerms,
        inputs: Sequence[TaskInput],
        payment: int,
        expiry_time: int,
        *,
        marks: Sequence[dict[str, Any]] | None = None,
        indexes: Sequence[int] | None = None,
        reconcile_from_block: int | None = None,
        existing: Mapping[str, OnChainTask] | None = None,
    ) -> list[PublishedTask]:
        """Publishes one task per input, pipelined, and returns them in input order.

        `source` is an address, or the SourceTerms already read (`source_terms`). `marks` (one dict
        per input, merged into its config) make each config URL unique. With
        `reconcile_from_block`, tasks of ours already published since that block with the same
        config URL are reused, not published again: a retry after a crash publishes nothing twice.
        `existing` (config URL -> task, from `find_published`) is the same, read once by a caller
        that publishes many times (a streaming batch). A failure after the first transaction raises
        PartialPublishError listing what landed."""
        inputs, marks, indexes = validation.check_batch_shape(inputs, marks, indexes)
        validation.check_int("reconcile_from_block", reconcile_from_block, minimum=0, optional=True)
        terms = source if isinstance(source, SourceTerms) else self.source_terms(source)
        known = dict(existing or {})
        if reconcile_from_block is not None:
            found = find_published(self.chain, self.address, terms.address, reconcile_from_block)
            known.update({url: tasks[0] for url, tasks in found.items()})
        self.check_batch(terms, len(inputs), payment, expiry_time)
        bodies = self.config_bodies(inputs, marks, indexes)  # every input checked before any write
        store = self._store()  # a client without a store is refused before anything is sent
        publication = Publication(self.chain, self.sender, store, terms.address, payment, expiry_time, indexes)
        return publication.run(bodies, known)

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
        if not isinstance(strategy, DeliveryStrategy):
            raise errors.InvalidInputError("strategy", f"expected a DeliveryStrategy, not {type(strategy).__name__}")
        validation.check_int("from_block", from_block, minimum=0)
        validation.check_number("poll_interval", poll_interval, exclusive_minimum=0, maximum=60)
        waiter = Waiter(
            self, published, strategy, from_block=from_block, poll_interval=poll_interval, on_change=on_change
        )
        return waiter.run(deadline)

    # ---- confirm, cancel, reclaim ----

    def confirm_responses(self, responses: Sequence[str], *, check: bool = True) -> list[Receipt]:
        responses = validation.check_addresses("responses", responses)
        if check and responses:  # a mistyped address would only "revert without a reason"
            codes = self.chain.rpc.batch([("eth_getCode", [r, "latest"]) for r in responses])
            for i, (response, code) in enumerate(zip(responses, codes)):
                if code in ("0x", "", None):
                    raise errors.InvalidInputError(f"responses[{i}]", f"no response contract at {response}")
        return self._pipelined([self.chain.controller.confirm_response(r) for r in responses], check, CONFIRM_GAS)

    def cancel_tasks(self, tasks: Sequence[str], *, check: bool = True) -> list[Receipt]:
        """Cancels NEW tasks (their escrow returns). With `check=False` a failed one does not
        raise: its receipt says (a task attempted meanwhile is not cancellable)."""
        tasks = validation.check_addresses("tasks", tasks)
        return self._pipelined([self.chain.controller.cancel_task(t) for t in tasks], check, 200_000)

    def reclaim_expired(self, tasks: Sequence[str], *, check: bool = True) -> list[Receipt]:
        """Takes back the escrow of expired, unfinished tasks: our devnet's `reclaimExpired`, which
        the real network does not have (errors.OGPUError there; see escrow.py)."""
        tasks = validation.check_addresses("tasks", tasks)
        if not self.chain.has_extensions():
            raise errors.OGPUError(
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
        except errors.OGPUError:
            if check:
                raise
            gas = fallback_gas  # the first would revert; the others may not
        return self.sender.wait(self.sender.send(calls, gas), check=check)
