"""Where provider records are kept (reputation.py), and the seal that makes them the owner's.

A record is sealed with an HMAC keyed by a secret derived one-way from the client wallet's key
(`signing.derive_secret`): anyone with API access can write a Prefect Variable, but only a client of
the same wallet can write one its books believe. Writers take one lock per workspace (a Prefect
global concurrency limit of 1) around read-merge-write, since Prefect Variables offer no
compare-and-set: two books flushing at once do not lose each other's updates."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

TAGS = ["ogpu", "ogpu-reputation"]
LOCK = "ogpu-rep-lock"
SEAL = "seal"
SEAL_LABEL = "ogpu-prefect reputation record v1"
"""What the sealing secret is derived for: never used for anything else."""


def seal(name: str, value: dict[str, Any], secret: bytes) -> dict[str, Any]:
    """`value` with its seal: an HMAC over the Variable's name and the value."""
    body = {k: v for k, v in value.items() if k != SEAL}
    return {**body, SEAL: _mac(name, body, secret)}


def unsealed(name: str, value: Any, secret: bytes) -> dict[str, Any] | None:
    """The value without its seal when the seal is this secret's for this name; else None."""
    if not isinstance(value, dict) or not isinstance(value.get(SEAL), str):
        return None
    body = {k: v for k, v in value.items() if k != SEAL}
    return body if hmac.compare_digest(value[SEAL], _mac(name, body, secret)) else None


def owner_tag(secret: bytes) -> str:
    """A short public name of the sealing wallet, one-way from its secret: each wallet keeps its
    own record of a provider (`reputation.record_name`), so two wallets sharing a workspace do not
    replace each other's records."""
    return hmac.new(secret, b"record owner", hashlib.sha256).hexdigest()[:12]


def _mac(name: str, body: dict[str, Any], secret: bytes) -> str:
    text = json.dumps([name, body], sort_keys=True, separators=(",", ":"), default=str)
    return hmac.new(secret, text.encode(), hashlib.sha256).hexdigest()


class RecordStore(Protocol):
    def load(self, name: str) -> Any: ...
    def save(self, name: str, value: dict[str, Any]) -> None: ...
    def exclusive(self) -> Any: ...


class MemoryStore:
    """Records in this process' memory: shared by its books, gone with it."""

    def __init__(self) -> None:
        self._data: dict[str, str] = {}
        self._lock = threading.Lock()
        self._writers = threading.Lock()

    def load(self, name: str) -> Any:
        with self._lock:
            raw = self._data.get(name)
        return None if raw is None else json.loads(raw)

    def save(self, name: str, value: dict[str, Any]) -> None:
        with self._lock:
            self._data[name] = json.dumps(value)

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._writers:
            yield

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


class VariableStore:
    """Records as Prefect Variables of the current API: every flow and deployment of the
    workspace shares them, and the UI shows (and edits) them."""

    def load(self, name: str) -> Any:
        from prefect.variables import Variable

        return Variable.get(name, default=None)

    def save(self, name: str, value: dict[str, Any]) -> None:
        from prefect.variables import Variable

        Variable.set(name, value, tags=TAGS, overwrite=True)

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """The workspace's record-writing lock (created on first use), held for 60 s at most."""
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
        from prefect.concurrency.sync import concurrency
        from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

        with get_client(sync_client=True) as client:
            try:
                client.read_global_concurrency_limit_by_name(LOCK)
            except ObjectNotFound:
                try:
                    client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=LOCK, limit=1))
                except ObjectAlreadyExists:
                    pass  # another book created it meanwhile
        with concurrency(LOCK, occupy=1, timeout_seconds=30, lease_duration=60, strict=True):
            yield
