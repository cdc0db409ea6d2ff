"""The read side, without Prefect: frozen snapshots of sources, tasks and responses, and a task's
responses, as the official SDK's `Source/Task/Response.snapshot()` and `get_task_responses` give
them. Only the real network's views are used (../shared/opengpu/abis/mainnet), each snapshot in
one JSON-RPC batch (`Chain.read_many`), many snapshots in one batch too.

Example (a chain from `Chain(network)`, a task address from `publish_tasks`):

    for r in get_task_responses(chain, task):
        print(r.provider, r.status.name, r.data_url)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

from .chain.connection import Chain
from .chain.errors import InvalidInputError, UnknownSourceInputError
from .chain.types import DeliveryMethod, Environment, ResponseStatus, SourceStatus, TaskStatus
from .validation import check_address

PAGE = 100
"""Addresses per paginated view call (`getResponsesOf(i, i + 99)`, as the SDK pages them)."""


class _Snapshot:
    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict: enums by name, amounts and times as ints."""
        return {k: _plain(v) for k, v in asdict(self).items()}  # type: ignore[call-overload]


def _plain(value: Any) -> Any:
    if isinstance(value, Environment):
        return [e.name.lower() for e in Environment if e in value]
    if isinstance(value, Enum):
        return value.name
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class SourceSnapshot(_Snapshot):
    address: str
    client: str
    status: SourceStatus
    metadata_url: str
    environments: Environment
    min_payment: int
    min_available_lockup: int
    max_expiry_duration: int
    delivery_method: DeliveryMethod
    last_update_time: int
    task_count: int
    registrant_count: int


@dataclass(frozen=True)
class TaskSnapshot(_Snapshot):
    address: str
    source: str
    status: TaskStatus
    config_url: str
    payment: int
    expiry_time: int
    delivery_method: DeliveryMethod
    attempt_count: int
    winning_provider: str | None


@dataclass(frozen=True)
class ResponseSnapshot(_Snapshot):
    address: str
    task: str
    provider: str
    data_url: str
    payment: int
    status: ResponseStatus
    timestamp: int
    confirmed: bool


def _addresses(field: str, values: Sequence[str], error: type[InvalidInputError] = InvalidInputError) -> list[str]:
    if isinstance(values, str):
        raise InvalidInputError(field, "expected a list of addresses, not one string")
    return [check_address(f"{field}[{i}]", v, error) for i, v in enumerate(values)]


def snapshot_sources(chain: Chain, sources: Sequence[str], *, field: str = "sources") -> list[SourceSnapshot]:
    """Snapshots of `sources`, in order. One that is not a source of this network's Nexus raises
    UnknownSourceInputError naming `field[i]`."""
    return _sources(chain, _addresses(field, sources, UnknownSourceInputError), field)


def _sources(chain: Chain, addrs: list[str], field: str, single: bool = False) -> list[SourceSnapshot]:
    ids = chain.read_many([chain.nexus.read.get_source_id(a) for a in addrs])
    for i, (a, sid) in enumerate(zip(addrs, ids)):
        if not sid:
            name = field if single else f"{field}[{i}]"
            raise UnknownSourceInputError(name, f"{a} is not a source of {chain.network.name}")

    def views(a: str) -> list[Any]:
        s = chain.source(a).read
        return [s.get_source_params(), s.get_status(), s.get_task_count(), s.get_registrant_count()]

    return [
        SourceSnapshot(
            a,
            p.client,
            SourceStatus(status),
            p.imageMetadataUrl,
            Environment(p.imageEnvironments),
            p.minPayment,
            p.minAvailableLockup,
            p.maxExpiryDuration,
            DeliveryMethod(p.deliveryMethod),
            p.lastUpdateTime,
            task_count,
            registrant_count,
        )
        for a, (p, status, task_count, registrant_count) in _read_each(chain, addrs, views)
    ]


def _read_each(chain: Chain, addrs: list[str], views: Any) -> list[tuple[str, list[Any]]]:
    """`views(address)` (a list of typed reads) of every address, in one batch: (address, values)."""
    per = [views(a) for a in addrs]
    values = chain.read_many([r for reads in per for r in reads])
    out, i = [], 0
    for a, reads in zip(addrs, per):
        out.append((a, values[i : i + len(reads)]))
        i += len(reads)
    return out


def snapshot_tasks(chain: Chain, tasks: Sequence[str], *, field: str = "tasks") -> list[TaskSnapshot]:
    """Snapshots of `tasks`, in order (an address with no contract: NoContractError)."""

    def views(a: str) -> list[Any]:
        t = chain.task(a).read
        return [t.task_params(), t.get_status(), t.get_delivery_method(), t.get_attempt_count(), t.winning_provider()]

    return [
        TaskSnapshot(
            a,
            source,
            TaskStatus(status),
            config,
            payment,
            expiry,
            DeliveryMethod(method),
            attempts,
            None if int(winner, 16) == 0 else winner,
        )
        for a, ((source, config, expiry, payment), status, method, attempts, winner) in _read_each(
            chain, _addresses(field, tasks), views
        )
    ]


def snapshot_responses(chain: Chain, responses: Sequence[str], *, field: str = "responses") -> list[ResponseSnapshot]:
    """Snapshots of `responses`, in order."""

    def views(a: str) -> list[Any]:
        r = chain.response(a).read
        return [r.get_response_params(), r.get_status(), r.response_timestamp(), r.confirmed_final()]

    return [
        ResponseSnapshot(a, p.task, p.provider, p.data, p.payment, ResponseStatus(status), timestamp, confirmed)
        for a, (p, status, timestamp, confirmed) in _read_each(chain, _addresses(field, responses), views)
    ]


def snapshot_source(chain: Chain, address: str, *, field: str = "source") -> SourceSnapshot:
    return _sources(chain, [check_address(field, address, UnknownSourceInputError)], field, single=True)[0]


def snapshot_task(chain: Chain, address: str, *, field: str = "task") -> TaskSnapshot:
    return snapshot_tasks(chain, [check_address(field, address)])[0]


def snapshot_response(chain: Chain, address: str, *, field: str = "response") -> ResponseSnapshot:
    return snapshot_responses(chain, [check_address(field, address)])[0]


def _paged(count: int) -> list[tuple[int, int]]:
    """Inclusive (lower, upper) pages over `count` items: an index >= count panics on chain."""
    return [(lo, min(lo + PAGE, count) - 1) for lo in range(0, count, PAGE)]


def response_addresses(chain: Chain, task: str) -> list[str]:
    """The addresses of a task's responses, in attempt order (`getResponsesOf` pages by the
    attempt count; an attempt without a response is the zero address, left out)."""
    t = chain.task(check_address("task", task))
    count = t.get_attempt_count()
    pages = chain.read_many([t.read.get_responses_of(lo, hi) for lo, hi in _paged(count)])
    return [a for page in pages for a in page if int(a, 16) != 0]


def get_task_responses(chain: Chain, task: str) -> list[ResponseSnapshot]:
    """Every response submitted for `task`, as snapshots, in attempt order (the SDK's
    `get_task_responses`, each response read whole)."""
    return snapshot_responses(chain, response_addresses(chain, task))


def source_tasks(chain: Chain, source: str) -> list[str]:
    """Every task published on `source`. The real network's `getTasks` reverts for a lower bound
    above 0, so it is read as the SDK does: once, `(0, count - 1)`."""
    s = chain.source(check_address("source", source, UnknownSourceInputError))
    count = s.get_task_count()
    return [a for a in s.get_tasks(0, count - 1) if int(a, 16) != 0] if count else []


def source_registrants(chain: Chain, source: str) -> list[str]:
    """Every provider registered to `source` (read as `source_tasks`: `(0, count - 1)`)."""
    s = chain.source(check_address("source", source, UnknownSourceInputError))
    count = s.get_registrant_count()
    return [a for a in s.get_registrants(0, count - 1) if int(a, 16) != 0] if count else []


@dataclass(frozen=True)
class RegisteredProvider(_Snapshot):
    """A provider registered to a source: the environment it offers there, its Vault standing and
    the hardware description it published (Terminal.baseDataOf: a URL, '' if none)."""

    address: str
    environment: Environment
    lockup: int
    eligible: bool
    base_data: str


def source_providers(chain: Chain, source: str) -> list[RegisteredProvider]:
    """Every provider registered to `source`, read in one batch after the registrant list (the
    real network's views only)."""
    registrants = source_registrants(chain, source)
    src = chain.source(source).read
    v, t = chain.vault.read, chain.terminal.read

    def views(a: str) -> list[Any]:
        return [src.preferred_environment_of(a), v.lockup_of(a), v.is_eligible(a), t.base_data_of(a)]

    return [
        RegisteredProvider(a, Environment(env), lockup, eligible, base)
        for a, (env, lockup, eligible, base) in _read_each(chain, registrants, views)
    ]


@dataclass(frozen=True)
class VaultSnapshot(_Snapshot):
    """One account's Vault buckets (wei), and its wallet's balance."""

    account: str
    balance: int
    lockup: int
    unbonding: int
    unbonding_matures_at: int | None
    frozen_payment: int
    total_earnings: int
    sanction: int
    eligible: bool
    whitelisted: bool
    wallet: int


def snapshot_vault(chain: Chain, account: str, *, field: str = "account") -> VaultSnapshot:
    """`account`'s Vault, in one batch."""
    a = check_address(field, account)
    v = chain.vault.read
    values = chain.read_many(
        [
            v.balance_of(a),
            v.lockup_of(a),
            v.unbonding_of(a),
            v.unbonding_timestamp(a),
            v.frozen_payment(a),
            v.total_earnings_of(a),
            v.sanction_of(a),
            v.is_eligible(a),
            v.is_whitelisted(a),
        ]
    )
    balance, lockup, unbonding, matures, frozen, earned, sanction, eligible, whitelisted = values
    return VaultSnapshot(
        a,
        balance,
        lockup,
        unbonding,
        matures or None,
        frozen,
        earned,
        sanction,
        eligible,
        whitelisted,
        chain.balance(a),
    )


def _wei(amount: int) -> str:
    return f"{amount} wei"


VAULT_SOURCES: dict[str, tuple[str, Callable[[VaultSnapshot], int]]] = {
    "deposit": ("wallet balance", lambda s: s.wallet),
    "withdraw": ("liquid Vault balance", lambda s: s.balance),
    "lock": ("liquid Vault balance", lambda s: s.balance),
    "unbond": ("lockup", lambda s: s.lockup),
}
"""What each Vault move takes its amount from."""


def check_vault_move(
    chain: Chain, move: str, amount: int, account: str, *, field: str = "amount", show: Callable[[int], str] = _wei
) -> None:
    """What the Vault would refuse for lack of funds, refused first as an InvalidInputError naming
    `field` (no gas spent): `move` is deposit, withdraw, lock or unbond (others are not checked).
    `show` writes an amount in the message."""
    if move not in VAULT_SOURCES:
        return
    if amount < 1:
        raise InvalidInputError(field, "must be more than 0")
    what, bucket = VAULT_SOURCES[move]
    available = bucket(snapshot_vault(chain, account))
    if amount > available:
        raise InvalidInputError(field, f"{show(amount)} is more than the {what} of {account} ({show(available)})")
