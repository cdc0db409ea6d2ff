"""What makes `run_batch` safe with money: its identity across retries and re-runs, its checks
before the first transaction, and the settling of its escrow on every way out.

- **Identity.** A batch is its `batch_key` (default: the flow run id, which a Prefect retry and a
  re-run of the same flow run keep). The chain, client, source and first block of a key are saved
  as a Prefect Variable before the first transaction; every publication of the key reconciles
  against the chain from that block (reconcile.py), so a retry, a re-run, or a new run with the
  same key publishes only what is missing.
- **Ledger.** Every task the batch has on chain, in memory while it runs (`live_ledger`), for the
  flow's own settling and for its failure hooks in the same process.
- **Settling.** At the end, and from the flow's failure, crash and cancellation hooks: cancel
  what is still NEW, reclaim what expired where the deployment can, and report the rest
  (escrow.py). A hook in another process (the runner of a served deployment) finds the batch's
  tasks from the chain and their configs' marks.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .chain.errors import (
    EscrowHeldError,
    ExpiryOutOfRangeError,
    InvalidInputError,
    OGPUError,
    PaymentOutOfRangeError,
    UnknownSourceInputError,
)
from .client import MIN_TTL, OGPUClient, SourceTerms
from .escrow import EscrowReport, settle
from .lease import BatchKeyConflictError, BatchLease, current_lease
from .reconcile import find_published
from .validation import check_address, check_int, check_name, check_number, refuse_secret

if TYPE_CHECKING:
    from .delivery import DeliveryStrategy

log = logging.getLogger(__name__)


class DeliveryMismatchError(InvalidInputError):
    """The delivery method needs sources of another on-chain delivery method."""


class BatchFailedError(OGPUError):
    """Every input that ended failed the same way the client can see (the providers' own error
    reports, or every result refused) and none succeeded: the batch stopped instead of
    re-publishing them. The message says how."""


class BatchIncompleteError(EscrowHeldError):
    """The batch ended with tasks whose escrow could not be settled (the node did not answer):
    `tasks` lists them; a run with the same batch_key settles them."""


def raise_if_unfinished(key: str, stopped: str | None, unreadable: Sequence[str]) -> None:
    """How a batch that ran through fails, the same in every flow: it stopped because every input
    failed the same way (`stopped`), or the node could not settle some tasks' escrow (`unreadable`)."""
    if stopped is not None:
        raise BatchFailedError(f"batch {key}: every input failed the same way: {stopped}")
    if unreadable:  # the flow's failure hook settles them if the node is back by then
        raise BatchIncompleteError(
            f"batch {key}: {len(unreadable)} task(s) could not be settled (the node did not answer); "
            f"a run with batch_key={key!r} settles them",
            unreadable,
        )


@dataclass(frozen=True)
class BatchRecord:
    key: str
    chain_id: int
    client: str
    source: str
    from_block: int

    @property
    def variable_name(self) -> str:
        return variable_name(self.key)


def variable_name(key: str) -> str:
    """The Prefect Variable holding a batch's record (names are short and [a-z0-9-])."""
    return "ogpu-batch-" + hashlib.sha256(key.encode()).hexdigest()[:32]


def open_batch(client: OGPUClient, key: str, source: str) -> BatchRecord:
    """The batch `key`'s record: saved by an earlier attempt, or made now (first block: the next
    one) and saved before anything is published."""
    from prefect.variables import Variable

    await_predecessor(client)
    name = variable_name(key)
    saved = Variable.get(name, default=None)
    if saved is None:
        record = BatchRecord(
            key, client.chain.network.chain_id, client.address, source, client.chain.block_number() + 1
        )
        try:
            Variable.set(
                name,
                {
                    "key": key,
                    "chain_id": record.chain_id,
                    "client": record.client,
                    "source": record.source,
                    "from_block": record.from_block,
                },
                overwrite=False,
            )
            return record
        except ValueError:  # a concurrent run of the same key saved it first
            saved = Variable.get(name, default=None)
    record = BatchRecord(
        saved["key"], int(saved["chain_id"]), saved["client"], saved["source"], int(saved["from_block"])
    )
    if (record.chain_id, record.client.lower(), record.source.lower()) != (
        client.chain.network.chain_id,
        client.address.lower(),
        source.lower(),
    ):
        raise BatchKeyConflictError(
            "batch_key",
            f"{key!r} is a batch of source {record.source} by {record.client} "
            f"on chain {record.chain_id}; use another key",
        )
    return record


def await_predecessor(client: OGPUClient) -> None:
    """Inside `hold_batch`: before the batch's tasks are read from the chain, waits until the
    previous holder's transactions are mined or can never be (lease.py's fence)."""
    lease = current_lease()
    if lease is not None:
        lease.await_predecessor(client.chain.rpc)


def hold_batch(key: str, flow_run_id: str | None = None, *, wait_s: float | None = None) -> BatchLease:
    """One run of batch `key` at a time (lease.py): `with hold_batch(key, run_id): ...`."""
    return BatchLease(variable_name(key), key, flow_run_id, wait_s=wait_s)


def find_batch(key: str) -> BatchRecord | None:
    from prefect.variables import Variable

    saved = Variable.get(variable_name(key), default=None)
    if saved is None:
        return None
    return BatchRecord(saved["key"], int(saved["chain_id"]), saved["client"], saved["source"], int(saved["from_block"]))


def check_parameters(
    source: Any, payment: Any, function_name: Any, delivery: Any, delivery_options: Any, batch_key: Any
) -> None:
    """What every batch flow runs and pays, checked before the chain is read: a bad parameter
    raises a typed InvalidInputError naming it, before any wei moves."""
    check_address("source", source, UnknownSourceInputError)
    check_int("payment", payment, minimum=0, maximum=2**96 - 1, error=PaymentOutOfRangeError)
    check_name("function_name", function_name, optional=True)
    check_name("delivery", delivery)
    refuse_secret("delivery_options", delivery_options)
    if delivery_options is not None and not isinstance(delivery_options, dict):
        raise InvalidInputError("delivery_options", f"a dict of options, not {type(delivery_options).__name__}")
    check_name("batch_key", batch_key, optional=True)


def check_limits(task_timeout: Any, batch_deadline: Any, max_republish: Any, budget: Any, poll_interval: Any) -> None:
    """Every batch flow's limits (times, rounds, budget, polling), checked like check_parameters."""
    check_int("task_timeout", task_timeout, minimum=MIN_TTL, error=ExpiryOutOfRangeError)
    check_int("batch_deadline", batch_deadline, minimum=2 * MIN_TTL, optional=True, error=ExpiryOutOfRangeError)
    check_int("max_republish", max_republish, minimum=0, maximum=100)
    check_int("budget", budget, minimum=0, optional=True)
    check_number("poll_interval", poll_interval, exclusive_minimum=0, maximum=60)


def check_source_fits(strategy: DeliveryStrategy, terms: SourceTerms, task_timeout: int) -> None:
    """Refuses a batch the source cannot take: another delivery method, or a task_timeout past
    the source's maxExpiryDuration."""
    check_delivery(strategy, terms.delivery_method)
    if not MIN_TTL <= task_timeout <= terms.max_expiry_duration:
        raise ExpiryOutOfRangeError(
            "task_timeout",
            f"{task_timeout}s is outside [{MIN_TTL}, {terms.max_expiry_duration}] (the source's maxExpiryDuration)",
        )


def check_delivery(strategy: DeliveryStrategy, method: Any) -> None:
    """Refuses a delivery method whose sources use another on-chain delivery method (it would
    wait until expiry, and leave providers unpaid)."""
    if strategy.requires != method:
        raise DeliveryMismatchError(
            "delivery", f"{strategy.name!r} works with {strategy.requires.name} sources; this source is {method.name}"
        )


@dataclass
class Ledger:
    """Every task a running batch has on chain, and how to settle them."""

    client: OGPUClient
    record: BatchRecord
    known: dict[str, None] = field(default_factory=dict)  # an ordered set
    settled: EscrowReport | None = None

    @property
    def tasks(self) -> list[str]:
        return list(self.known)

    def add(self, addresses: Sequence[str]) -> None:
        self.known.update(dict.fromkeys(addresses))

    def drop(self, addresses: Sequence[str]) -> None:
        """Forgets tasks whose escrow is paid or back (a streaming batch keeps only what is open)."""
        for a in addresses:
            self.known.pop(a, None)

    def settle(self, tasks: Sequence[str] | None = None) -> EscrowReport:
        report = settle(self.client, list(tasks) if tasks is not None else self.tasks)
        self.settled = report
        return report


_live: dict[str, Ledger] = {}
_live_lock = threading.Lock()


def live_ledger(key: str, ledger: Ledger | None = None, *, drop: bool = False) -> Ledger | None:
    """The ledger of a batch running in this process (for its hooks), set, read or dropped."""
    with _live_lock:
        if drop:
            return _live.pop(key, None)
        if ledger is not None:
            _live[key] = ledger
        return _live.get(key)


def batch_tasks_on_chain(client: OGPUClient, record: BatchRecord) -> tuple[list[str], list[str]]:
    """(tasks of the batch, duplicates among them) from the chain alone: the client's tasks on the
    source since the batch's first block whose config carries this batch's mark."""
    await_predecessor(client)
    found = find_published(client.chain, client.address, record.source, record.from_block)
    ours, duplicates = [], []
    for url, tasks in found.items():
        try:
            config = client.fetch(url)
        except OGPUError as e:
            log.warning("could not read the config of %d task(s) at %s: %s", len(tasks), url, e)
            continue
        mark = config.get("ogpu_prefect") if isinstance(config, dict) else None
        if isinstance(mark, dict) and mark.get("batch") == record.key:
            ours += [t.address for t in tasks]
            duplicates += [t.address for t in tasks[1:]]
    return ours, duplicates


def settle_batch(client: OGPUClient, key: str) -> EscrowReport | None:
    """Settles every task of batch `key` (see module doc): from its live ledger when it runs in
    this process, else from the chain. None when no such batch was ever opened."""
    ledger = live_ledger(key)
    if ledger is not None:
        return ledger.settle()
    record = find_batch(key)
    if record is None:
        return None
    tasks, _ = batch_tasks_on_chain(client, record)
    return settle(client, tasks)
