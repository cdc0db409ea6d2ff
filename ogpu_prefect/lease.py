"""One run of a batch at a time: two runs of one `batch_key` at once would both find nothing
published and both publish (a deployment triggered twice, a re-run started while a zombie of the
first still runs).

The slot is a Prefect global concurrency limit of 1 per batch (`ogpu-batch-<hash>`), taken with a
lease that this process renews and the server takes back LEASE_S after renewals stop (a crash).
The holder's flow run, host, pid and lease id are kept in a Prefect Variable beside it, so that a
run that finds the slot taken can tell a holder that is gone (its process is dead on this host, or
it is this process and no longer holds it) and release its lease at once instead of waiting for
the server to.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from typing import Any

from .chain.errors import InvalidInputError

log = logging.getLogger(__name__)

LEASE_S = 60
"""Seconds the slot stays held after its holder stops renewing it: the least Prefect allows."""
RENEW_S = 15

_held: set[str] = set()  # lease ids this process holds now
_held_lock = threading.Lock()


class BatchKeyConflictError(InvalidInputError):
    """The batch_key is already a batch of another chain, client or source, or is being run."""


class BatchLease:
    """`with BatchLease(name, flow_run_id): ...` holds batch `name`'s slot (see module doc)."""

    def __init__(self, name: str, key: str, flow_run_id: str | None, *, wait_s: float | None = None) -> None:
        from .settings import get_settings

        self.name, self.key, self.flow_run_id = name, key, flow_run_id
        self.wait_s = get_settings().batch_lease_wait_s if wait_s is None else wait_s
        self.holder_variable = name.replace("ogpu-batch-", "ogpu-lease-", 1)
        self.lease_id: str | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def __enter__(self) -> BatchLease:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as c:
            self._ensure_limit(c)
            self.lease_id = self._acquire(c)
        self._renewer = threading.Thread(target=self._renew, name="ogpu-batch-lease", daemon=True)
        self._renewer.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        from prefect.client.orchestration import get_client
        from prefect.variables import Variable

        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=10)
        with _held_lock:
            _held.discard(self.lease_id or "")
        try:
            with get_client(sync_client=True) as c:
                c.release_concurrency_slots_with_lease(self.lease_id)
            Variable.unset(self.holder_variable)
        except Exception as e:  # the server takes the slot back when the lease runs out
            log.warning("could not release batch %s's slot (%s); it frees itself within %ds", self.key, e, LEASE_S)

    def _ensure_limit(self, c: Any) -> None:
        from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
        from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

        try:
            c.read_global_concurrency_limit_by_name(self.name)
        except ObjectNotFound:
            try:
                c.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=self.name, limit=1))
            except ObjectAlreadyExists:  # another run of the key made it meanwhile
                pass

    def _acquire(self, c: Any) -> str:
        from httpx import HTTPStatusError
        from prefect.client.schemas.objects import ConcurrencyLeaseHolder
        from prefect.variables import Variable

        holder = ConcurrencyLeaseHolder(type="flow_run", id=self.flow_run_id) if self.flow_run_id else None
        deadline = time.monotonic() + self.wait_s
        told = False
        while True:
            try:
                reply = c.increment_concurrency_slots_with_lease([self.name], 1, "concurrency", LEASE_S, holder)
            except HTTPStatusError as e:
                if e.response.status_code != 423:  # 423 Locked: the slot is taken
                    raise
            else:
                lease_id = str(reply.json()["lease_id"])
                me = {"lease_id": lease_id, "flow_run": self.flow_run_id, **_machine(), "pid": os.getpid()}
                me["started"] = _start_time(os.getpid())
                with _held_lock:
                    _held.add(lease_id)
                Variable.set(self.holder_variable, me, overwrite=True)
                return lease_id
            if self._release_if_gone(c):
                continue
            if time.monotonic() >= deadline:
                raise BatchKeyConflictError(
                    "batch_key",
                    f"{self.key!r} is being run by another flow run (waited {self.wait_s:.0f}s); "
                    "try again when it ends",
                )
            if not told:
                log.warning("batch %s is being run elsewhere: waiting up to %.0fs for it", self.key, self.wait_s)
                told = True
            time.sleep(1.0)

    def _release_if_gone(self, c: Any) -> bool:
        from prefect.variables import Variable

        saved = Variable.get(self.holder_variable, default=None)
        if not isinstance(saved, dict) or not saved.get("lease_id"):
            return False
        if any(saved.get(k) != v for k, v in _machine().items()):
            # Another machine's, or another container's on this host (a pid means nothing there):
            # only the server can tell (the lease runs out).
            return False
        pid = saved.get("pid")
        if pid == os.getpid():
            with _held_lock:
                if saved["lease_id"] in _held:
                    return False  # another thread of this process runs it now
        elif _alive(pid, saved.get("started")):
            return False
        log.warning("batch %s was held by a run that is gone (%s); taking it over", self.key, saved.get("flow_run"))
        c.release_concurrency_slots_with_lease(saved["lease_id"])
        Variable.unset(self.holder_variable)
        return True

    def _renew(self) -> None:
        from prefect.client.orchestration import get_client

        client: Any = None  # kept across renewals: each new client builds a TLS context
        while not self._stop.wait(RENEW_S):
            try:
                if client is None:
                    client = get_client(sync_client=True).__enter__()
                client.renew_concurrency_lease(self.lease_id, LEASE_S)
            except Exception as e:  # the batch goes on: ending it here would strand what is in flight
                log.warning("could not renew batch %s's slot: %s", self.key, e)
                client = _closed(client)
        _closed(client)


def _closed(client: Any) -> None:
    if client is not None:
        with contextlib.suppress(Exception):
            client.__exit__(None, None, None)


def _machine() -> dict[str, str]:
    """What makes a pid meaningful: the host, its boot, and the pid namespace."""
    return {"host": socket.gethostname(), "boot": _read("/proc/sys/kernel/random/boot_id"), "pidns": _pidns()}


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def _pidns() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat field 22): a pid
    reused by another process has another one."""
    stat = _read(f"/proc/{pid}/stat")
    return stat.rsplit(")", 1)[-1].split()[19] if stat else ""


def _alive(pid: Any, started: Any = None) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return True  # unknown: assume it runs
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not started or _start_time(pid) in ("", started)
