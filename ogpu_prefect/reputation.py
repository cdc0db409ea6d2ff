"""Provider reputation: what a client remembers of each provider's results, across batches and flows.

Delivery methods mark the responses they refuse (`ResponseView.reject`: a validator's no, a lost
consensus, an unreadable payload). The waiting loop (waiting.py) books each refusal and each
accepted result here, hides banned providers' responses from every delivery method, and gives up
early on a task whose every response was refused, so that run_batch re-publishes its input.

- `ProviderRecord`: one provider's history on one chain.
- `ReputationPolicy`: when a provider is banned and when it is forgiven; a pure function of the
  record and the time. Plugins add named policies (`ogpu_prefect_reputation_policies`).
- `ReputationBook`: the records one wait meets, loaded on first use, cached, written back when
  they change. Kept as one Prefect Variable per (chain, provider, client wallet),
  `ogpu-rep-<chain id>-<address>-<wallet tag>` (`VariableStore`), or in this process' memory
  (`MemoryStore`) without a Prefect API; sealed by the client wallet (reputation_store.py): a
  record its wallet did not write is ignored.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, ClassVar

from .chain.errors import InvalidInputError
from .delivery import Rejection
from .reputation_store import MemoryStore, RecordStore, VariableStore, owner_tag, seal, unsealed
from .validation import check_int, check_number

log = logging.getLogger(__name__)

PREFIX = "ogpu-rep"
OFF = "off"  # the `reputation` value (like None) that keeps no records and bans nobody
REASONS = tuple(r.value for r in Rejection)


def record_name(chain_id: int, provider: str, owner: str | None = None) -> str:
    """The name of a provider's record, per sealing wallet (`owner`, reputation_store.owner_tag):
    Prefect Variable names are [a-z0-9_-]. Without an owner: an unsealed book's name, which
    sealed books of earlier versions also used (read once, as a fallback)."""
    base = f"{PREFIX}-{int(chain_id)}-{provider.lower()}"
    return base if owner is None else f"{base}-{owner}"


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")


def _time(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return datetime.fromisoformat(str(value)).timestamp()


def _latest(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


@dataclass(frozen=True)
class ProviderRecord:
    """One provider's history on one chain, as the clients sharing a store saw it."""

    provider: str
    """Its address, lower-case."""
    rejections: Mapping[str, int] = field(default_factory=dict)
    """Refused responses by reason (`Rejection` values), ever."""
    accepted: int = 0
    """Results chosen (and so paid)."""
    strikes: int = 0
    """Refusals the policy counts, since the provider was last forgiven."""
    bans: int = 0
    last_seen: float | None = None
    """Wall clock of its latest response to a task a book followed."""
    last_rejection: float | None = None
    """Wall clock of its latest strike."""
    banned_until: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The stored form: times as ISO 8601 (UTC), readable in the UI's Variables page."""
        return {
            "provider": self.provider,
            "rejections": dict(sorted(self.rejections.items())),
            "accepted": self.accepted,
            "strikes": self.strikes,
            "bans": self.bans,
            "last_seen": _iso(self.last_seen),
            "last_rejection": _iso(self.last_rejection),
            "banned_until": _iso(self.banned_until),
        }

    @classmethod
    def from_json(cls, provider: str, data: Any) -> ProviderRecord:
        """A record from its stored form. A value that is not one (edited by hand) is a fresh
        record: a typo in the UI must not stop a batch."""
        try:
            return cls(
                provider.lower(),
                {str(k): int(v) for k, v in (data.get("rejections") or {}).items()},
                int(data.get("accepted", 0)),
                int(data.get("strikes", 0)),
                int(data.get("bans", 0)),
                _time(data.get("last_seen")),
                _time(data.get("last_rejection")),
                _time(data.get("banned_until")),
            )
        except (AttributeError, TypeError, ValueError):
            log.warning("the reputation record of %s is not one (%.80r): starting afresh", provider, data)
            return cls(provider.lower())


def merge(theirs: ProviderRecord, base: ProviderRecord, mine: ProviderRecord) -> ProviderRecord:
    """`mine` (changed from `base`) onto `theirs` (the stored record, changed meanwhile by
    another book): counters add what each side added, times keep the latest."""

    def added(a: int, b: int, c: int) -> int:
        return max(0, a + c - b)

    reasons = sorted({*theirs.rejections, *mine.rejections})
    return ProviderRecord(
        theirs.provider,
        {r: added(theirs.rejections.get(r, 0), base.rejections.get(r, 0), mine.rejections.get(r, 0)) for r in reasons},
        added(theirs.accepted, base.accepted, mine.accepted),
        added(theirs.strikes, base.strikes, mine.strikes),
        added(theirs.bans, base.bans, mine.bans),
        _latest(theirs.last_seen, mine.last_seen),
        _latest(theirs.last_rejection, mine.last_rejection),
        _latest(theirs.banned_until, mine.banned_until),
    )


@dataclass(frozen=True)
class ReputationPolicy:
    """Bans a provider for `forgive_s` seconds once it has `k` strikes (refusals of the reasons
    in `count`); forgets its strikes when a ban ends, or `forgive_s` after its last strike.
    Subclass to change the rule (a plugin returns its subclasses by name): every method is a pure
    function of a record and the time."""

    name: ClassVar[str] = "default"

    k: int = 3
    forgive_s: float = 3600.0
    reject_grace_s: float = 30.0
    """How long a task whose every response was refused waits for another one before it is given
    up and its input re-published (once every provider that attempted it has answered: 3 s)."""
    count: tuple[str, ...] = REASONS
    """The refusals that are strikes (every refusal is recorded)."""

    def __post_init__(self) -> None:
        check_int("k", self.k, minimum=1)
        check_number("forgive_s", self.forgive_s, minimum=0)
        check_number("reject_grace_s", self.reject_grace_s, minimum=0)
        if isinstance(self.count, str) or not isinstance(self.count, (list, tuple)):
            raise InvalidInputError("count", f"a list of reasons among {', '.join(REASONS)}")
        unknown = [c for c in self.count if c not in REASONS]
        if unknown:
            raise InvalidInputError("count", f"{unknown[0]!r} is not one of {', '.join(REASONS)}")
        object.__setattr__(self, "count", tuple(self.count))  # a JSON list from a flow parameter

    def banned(self, record: ProviderRecord, now: float) -> bool:
        return record.banned_until is not None and now < record.banned_until

    def forgiven(self, record: ProviderRecord, now: float) -> ProviderRecord:
        """The record with what `now` forgives: an ended ban, or strikes gone stale."""
        if record.banned_until is not None:
            return replace(record, strikes=0, banned_until=None) if now >= record.banned_until else record
        stale = record.last_rejection is not None and now - record.last_rejection >= self.forgive_s
        return replace(record, strikes=0) if record.strikes and stale else record

    def review(self, record: ProviderRecord, now: float) -> ProviderRecord:
        """Forgives what is due, then bans a provider that has `k` strikes."""
        record = self.forgiven(record, now)
        if record.strikes >= self.k and not self.banned(record, now):
            return replace(record, banned_until=now + self.forgive_s, bans=record.bans + 1)
        return record

    def rejected(self, record: ProviderRecord, reason: str, now: float) -> ProviderRecord:
        record = self.forgiven(record, now)
        strike = reason in self.count and not self.banned(record, now)
        return self.review(
            replace(
                record,
                rejections={**record.rejections, reason: record.rejections.get(reason, 0) + 1},
                strikes=record.strikes + strike,
                last_rejection=now if strike else record.last_rejection,
                last_seen=_latest(record.last_seen, now),
            ),
            now,
        )

    def accepted(self, record: ProviderRecord, now: float) -> ProviderRecord:
        record = self.forgiven(record, now)
        return replace(record, accepted=record.accepted + 1, last_seen=_latest(record.last_seen, now))


MEMORY = MemoryStore()
"""The default store of a book made without one (plain Python)."""


def _logger() -> Any:
    """The run's logger inside a flow or task (its logs in the UI), else the module's."""
    try:
        from prefect import get_run_logger

        return get_run_logger()
    except Exception:
        return log


class ReputationBook:
    """The records of the providers a wait meets, under one policy. A record is loaded when its
    provider is first met and written back by `flush` when it changed, merged with what another
    book wrote meanwhile. A store that fails is left for the book's life (logged once): a
    reputation outage never stops a batch. One waiting loop uses a book: not thread-safe."""

    def __init__(
        self,
        chain_id: int,
        policy: ReputationPolicy | None = None,
        store: RecordStore | None = None,
        *,
        clock: Callable[[], float] = time.time,
        secret: bytes | None = None,
    ) -> None:
        self.chain_id = chain_id
        self.secret = secret  # seals what it writes; with one, an unsealed or foreign record is ignored
        self.owner = None if secret is None else owner_tag(secret)
        self.policy = policy or ReputationPolicy()
        self.store: RecordStore = store if store is not None else MEMORY
        self.clock = clock
        self.urgent = False  # a ban (or pardon) to write: the waiting loop flushes it at once
        self.booked: Counter[str] = Counter()  # what this book recorded: refusals by reason, accepted, bans
        self._records: dict[str, ProviderRecord] = {}
        self._base: dict[str, ProviderRecord | None] = {}  # as loaded or last written
        self._dirty: set[str] = set()
        self._foreign: set[str] = set()  # records found forged: warned about once each
        self._store_down = False

    @classmethod
    def prefect(
        cls, chain_id: int, policy: ReputationPolicy | None = None, secret: bytes | None = None
    ) -> ReputationBook:
        """A book on Prefect Variables, sealed with `secret` (signing.derive_secret)."""
        return cls(chain_id, policy, VariableStore(), secret=secret)

    def _name(self, key: str) -> str:
        return record_name(self.chain_id, key, self.owner)

    def _load(self, key: str) -> ProviderRecord | None:
        data = self._read(self._name(key), key)
        if data is None and self.owner is not None and not self._store_down:
            # written by an earlier version under the shared name: this wallet's only if sealed by it
            data = self._read(record_name(self.chain_id, key), key)
        return None if data is None else ProviderRecord.from_json(key, data)

    def _read(self, name: str, key: str) -> Any:
        if self._store_down:
            return None
        try:
            data = self.store.load(name)
        except Exception as e:
            self._store_down = True
            _logger().warning("provider records cannot be read (%s): this batch keeps them in memory", e)
            return None
        if data is not None and self.secret is not None:
            data = unsealed(name, data, self.secret)
            if data is None:  # anyone with API access can write a Variable: not a verdict of ours
                if key not in self._foreign:
                    _logger().warning("Variable %s was not written by a client of this wallet: ignored", name)
                self._foreign.add(key)
        return data

    def record(self, provider: str) -> ProviderRecord:
        key = provider.lower()
        if key not in self._records:
            stored = self._load(key)
            self._base[key] = stored
            self._records[key] = stored or ProviderRecord(key)
        return self._records[key]

    def _put(self, record: ProviderRecord) -> ProviderRecord:
        self._records[record.provider] = record
        self._dirty.add(record.provider)
        return record

    def banned(self, provider: str, now: float | None = None) -> bool:
        return self.policy.banned(self.record(provider), self.clock() if now is None else now)

    def reject(self, provider: str, reason: Rejection | str, now: float | None = None) -> ProviderRecord:
        now = self.clock() if now is None else now
        before = self.record(provider)
        after = self._put(self.policy.rejected(before, Rejection(reason).value, now))
        self.booked[Rejection(reason).value] += 1
        if after.bans > before.bans:
            self.urgent = True
            self.booked["bans"] += 1
            _logger().warning(
                "provider %s banned until %s: %d strike(s) (%s)",
                after.provider,
                _iso(after.banned_until),
                after.strikes,
                ", ".join(f"{r}: {n}" for r, n in sorted(after.rejections.items())),
            )
        return after

    def accept(self, provider: str, now: float | None = None) -> ProviderRecord:
        self.booked["accepted"] += 1
        return self._put(self.policy.accepted(self.record(provider), self.clock() if now is None else now))

    def seen(self, provider: str, now: float | None = None) -> None:
        record = self.record(provider)
        self._put(replace(record, last_seen=_latest(record.last_seen, self.clock() if now is None else now)))

    def pardon(self, provider: str) -> ProviderRecord:
        """Lifts a ban and clears the strikes now (the history stays)."""
        self.urgent = True
        return self._put(replace(self.record(provider), strikes=0, banned_until=None))

    @property
    def changed(self) -> bool:
        """Whether `flush` has records to write."""
        return bool(self._dirty) and not self._store_down

    def flush(self) -> None:
        """Writes back the records that changed since they were loaded or last written."""
        self.urgent = False
        if not self._dirty or self._store_down:
            return
        try:
            # read-merge-write by one writer at a time: no lost update (a store without a lock: as is)
            with getattr(self.store, "exclusive", nullcontext)():
                for key in sorted(self._dirty):
                    self._write(key)
                    if self._store_down:
                        return
        except Exception as e:
            self._store_down = True
            _logger().warning("provider records cannot be written (%s): kept in memory for this batch", e)
            return
        self._dirty.clear()

    def _write(self, key: str) -> None:
        mine, name = self._records[key], self._name(key)
        theirs = self._load(key)
        if self._store_down:
            return
        base = self._base.get(key)
        if theirs != base:  # another book wrote meanwhile, or the record was deleted (a reset): ours on top
            mine = self.policy.review(
                merge(theirs or ProviderRecord(key), base or ProviderRecord(key), mine), self.clock()
            )
        value = mine.to_json()
        self.store.save(name, value if self.secret is None else seal(name, value, self.secret))
        self._records[key] = self._base[key] = mine


def parse_reputation(name: Any, options: Any = None) -> ReputationPolicy | None:
    """The reputation policy `name` configured with `options`; None for None or "off" (no
    records, no bans). Typed errors name `reputation` or `reputation_options[.option]`."""
    from .plugin_manager import PluginKind
    from .validation import configured_policy

    return configured_policy(PluginKind.REPUTATION_POLICY, "reputation", name, options)  # type: ignore[no-any-return]


def open_book(
    chain_id: int, name: Any = "default", options: Any = None, signer: Any = None, *, seal: bytes | None = None
) -> ReputationBook | None:
    """The book a Prefect wait uses, or None when reputation is off: on Prefect Variables sealed
    by the client's wallet (`signer`, or the `seal` derived from its key where the key is in
    another process); in memory for a signer whose key stays elsewhere (a KMS), since an unsealed
    shared record could be forged."""
    from .chain.signing import derive_secret
    from .reputation_store import SEAL_LABEL

    policy = parse_reputation(name, options)
    if policy is None:
        return None
    secret = seal if seal is not None else None if signer is None else derive_secret(signer, SEAL_LABEL)
    if secret is None:
        _logger().warning("this wallet's key is not at hand to seal provider records: kept in memory for this batch")
        return ReputationBook(chain_id, policy, MEMORY)
    return ReputationBook.prefect(chain_id, policy, secret)
