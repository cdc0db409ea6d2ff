"""One run of a batch at a time: two runs of one `batch_key` at once would both find nothing
published and both publish (a deployment triggered twice, a re-run started while a zombie of the
first still runs).

The slot is a Prefect global concurrency limit of 1 per batch (`ogpu-batch-<hash>`), taken with a
lease that this process renews and the server takes back LEASE_S after renewals stop (a crash).
The holder's flow run, host, pid and lease id are kept in a Prefect Variable beside it, so that a
run that finds the slot taken can tell a holder that is gone (its process is dead on this host, or
it is this process and no longer holds it) and release its lease at once instead of waiting for
the server to.

The fence: a lease that lapses must not leave two publishers. The holder publishes only while its
lease is surely held (`check`: before its last successful renewal + LEASE_S - FENCE_MARGIN_S, and
never after a renewal answered 410 Gone), and records in the Variable, before broadcasting, the
highest nonce it signed for the batch (`record_nonces`). The next holder inherits that mark and,
before it reads what is published (`await_predecessor`), waits until the chain has used every nonce
up to it: each transaction the previous holder signed is then mined or can never be.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import socket
import threading
import time
from typing import Any

from .chain.errors import InvalidInputError, OGPUError
from .chain.pool import drop_queued, queued_of
from .prefect_api import in_caller_context

log = logging.getLogger(__name__)

LEASE_S = 60
"""Seconds the slot stays held after its holder stops renewing it: the least Prefect allows."""
RENEW_S = 15
FENCE_MARGIN_S = 15
"""Seconds before the server could take the slot back at which the holder stops publishing: room
for a chunk signed just before to reach the node."""
DROPPED_AFTER_S = 30
"""Seconds the previous holder's unmined nonces must stay absent from the node's pool (nothing of
its address pending) before they count as never sent or dropped; 3 s when that holder's process is
known dead (it can send nothing more)."""
PREDECESSOR_WAIT_S = 600
"""Seconds to wait for the previous holder's pending transactions to be mined."""

_held: set[str] = set()  # lease ids this process holds now
_held_lock = threading.Lock()
_current: contextvars.ContextVar[BatchLease | None] = contextvars.ContextVar("ogpu_batch_lease", default=None)


class BatchKeyConflictError(InvalidInputError):
    """The batch_key is already a batch of another chain, client or source, or is being run."""


class LeaseLostError(OGPUError):
    """This run no longer surely holds its batch's lease (renewals failed, or another run took
    it): it stopped publishing; a run with the same batch_key takes over."""


def current_lease() -> BatchLease | None:
    """The batch lease held in this context (inside `with hold_batch(...)`), if any."""
    return _current.get()


class BatchLease:
    """`with BatchLease(name, flow_run_id): ...` holds batch `name`'s slot (see module doc)."""

    def __init__(self, name: str, key: str, flow_run_id: str | None, *, wait_s: float | None = None) -> None:
        from .settings import get_settings

        self.name, self.key, self.flow_run_id = name, key, flow_run_id
        self.what = f"batch {key}"  # in log lines
        self.holder_info: dict[str, Any] = {}  # more about the holder, for whoever finds the slot taken
        self.wait_s = get_settings().batch_lease_wait_s if wait_s is None else wait_s
        self.holder_variable = name.replace("ogpu-batch-", "ogpu-lease-", 1)
        self.lease_id: str | None = None
        self.valid_until = 0.0  # time.monotonic() after which this holder publishes nothing
        self.lost = False
        self.inherited: tuple[str, int] | None = None  # (address, nonce mark) the previous holder left
        self._holder_dead = False  # the previous holder's process is known dead (on this host)
        self._record: dict[str, Any] = {}
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._token: contextvars.Token[BatchLease | None] | None = None

    def __enter__(self) -> BatchLease:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as c:
            self._ensure_limit(c)
            self.lease_id = self._acquire(c)
        # A thread starts with an empty context: run the renewer in a copy of this one, so that it
        # talks to the same Prefect API (temporary_settings are per context).
        self._renewer = threading.Thread(target=in_caller_context(self._renew), name="ogpu-batch-lease", daemon=True)
        self._renewer.start()
        self._token = _current.set(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        from prefect.client.orchestration import get_client
        from prefect.variables import Variable

        if self._token is not None:
            try:
                _current.reset(self._token)
            except ValueError:  # exited in another context than entered
                _current.set(None)
            self._token = None
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=10)
        with _held_lock:
            _held.discard(self.lease_id or "")
        if self.lost:  # the server took the slot back: nothing of it is ours to write or free
            return
        try:
            # The mark stays for the next holder (a transaction may still be pending): written
            # while the slot is still ours, and only over our own record (a lease that lapsed may
            # be another run's now: its record and higher mark are not ours to overwrite).
            saved = Variable.get(self.holder_variable, default=None)
            if isinstance(saved, dict) and saved.get("lease_id") == self.lease_id:
                Variable.set(self.holder_variable, _released(self._record), overwrite=True)
            with get_client(sync_client=True) as c:
                c.release_concurrency_slots_with_lease(self.lease_id)
        except Exception as e:  # the server takes the slot back when the lease runs out
            log.warning("could not release %s's slot (%s); it frees itself within %ds", self.what, e, LEASE_S)

    # ---- the fence ----

    def check(self) -> None:
        """Raises LeaseLostError unless the lease is surely still held (see module doc)."""
        if self.lost:
            raise LeaseLostError(f"batch {self.key}'s lease was taken back: stopped publishing")
        if time.monotonic() > self.valid_until:
            raise LeaseLostError(
                f"batch {self.key}'s lease could not be renewed for {LEASE_S - FENCE_MARGIN_S}s "
                "(the Prefect API is unreachable?): stopped publishing before it lapses"
            )

    def surely_held(self) -> bool:
        """Whether `check` would pass now."""
        return not self.lost and time.monotonic() <= self.valid_until

    def record_nonces(self, address: str, highest: int) -> None:
        """Records, before they are broadcast, that this holder signed transactions of `address`
        up to nonce `highest` for the batch. Raises LeaseLostError (nothing may be broadcast)
        when the lease is not surely held or the record cannot be written."""
        from prefect.variables import Variable

        self.check()
        if self._record.get("address") == address and int(self._record.get("nonce_mark", -1)) >= highest:
            return
        try:
            saved = Variable.get(self.holder_variable, default=None)
            if not isinstance(saved, dict) or saved.get("lease_id") != self.lease_id:
                self.lost = True
                raise LeaseLostError(f"batch {self.key} is held by another run now: stopped publishing")
            record = {**self._record, "address": address, "nonce_mark": highest}
            Variable.set(self.holder_variable, record, overwrite=True)
        except LeaseLostError:
            raise
        except Exception as e:
            raise LeaseLostError(f"could not record batch {self.key}'s nonces ({e}): stopped publishing") from e
        self._record = record
        self.check()  # the write may have taken long

    def await_predecessor(self, rpc: Any) -> None:
        """Waits until every transaction the previous holder signed for the batch is mined or can
        never be (its nonce used on chain), so that what is published can be read: call before
        reading the batch's tasks from the chain. Raises BatchKeyConflictError when they stay
        pending past PREDECESSOR_WAIT_S."""
        if self.inherited is None:
            return
        address, mark = self.inherited
        give_up_at = time.monotonic() + PREDECESSOR_WAIT_S
        quiet_since: float | None = None
        told = False
        while True:
            latest, pending = (int(n, 16) for n in _counts(rpc, address))
            if latest > mark:
                break
            now = time.monotonic()
            queued = queued_of(rpc, address) if pending <= latest else 0
            if queued and self._holder_dead and drop_queued(rpc, address):
                # A gap (or anvil's stuck queue) holds them back: mined later, they would publish
                # what this run, reading the chain now, publishes again. Now they never can be.
                log.warning(
                    "batch %s: removed %d queued transaction(s) of the previous run from the node's pool",
                    self.key,
                    queued,
                )
                queued = 0
            if pending <= latest and not queued:  # nothing of the address in the node's pool
                quiet_since = quiet_since if quiet_since is not None else now
                if now - quiet_since >= (3.0 if self._holder_dead else DROPPED_AFTER_S):
                    log.warning(
                        "batch %s: the previous run's nonces %d-%d of %s never reached the chain: taken as dropped",
                        self.key,
                        latest,
                        mark,
                        address,
                    )
                    break
            else:
                quiet_since = None
            if now > give_up_at:
                raise BatchKeyConflictError(
                    "batch_key",
                    f"{self.key!r}: the previous run's transactions (nonces up to {mark} of {address}) are still "
                    f"pending after {PREDECESSOR_WAIT_S}s; try again when they are mined",
                )
            if not told:
                log.warning(
                    "batch %s: waiting for the previous run's transactions (nonces up to %d of %s) to be mined",
                    self.key,
                    mark,
                    address,
                )
                told = True
            time.sleep(0.5)
        self.inherited = None

    # ---- taking and keeping the slot ----

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
            asked_at = time.monotonic()
            try:
                reply = c.increment_concurrency_slots_with_lease([self.name], 1, "concurrency", LEASE_S, holder)
            except HTTPStatusError as e:
                if e.response.status_code != 423:  # 423 Locked: the slot is taken
                    raise
            else:
                lease_id = str(reply.json()["lease_id"])
                self.valid_until = asked_at + LEASE_S - FENCE_MARGIN_S
                before = Variable.get(self.holder_variable, default=None)
                me: dict[str, Any] = {"lease_id": lease_id, "flow_run": self.flow_run_id, **self.holder_info}
                me.update(_machine())
                me.update(pid=os.getpid(), started=_start_time(os.getpid()))
                if isinstance(before, dict) and before.get("address") and before.get("nonce_mark") is not None:
                    self.inherited = (str(before["address"]), int(before["nonce_mark"]))
                    me.update(address=self.inherited[0], nonce_mark=self.inherited[1])  # kept until waited for
                with _held_lock:
                    _held.add(lease_id)
                Variable.set(self.holder_variable, me, overwrite=True)
                self._record = me
                return lease_id
            if self._release_if_gone(c):
                continue
            if time.monotonic() >= deadline:
                raise self._conflict(Variable.get(self.holder_variable, default=None))
            if not told:
                log.warning("%s is being run elsewhere: waiting up to %.0fs for it", self.what, self.wait_s)
                told = True
            time.sleep(1.0)

    def _conflict(self, holder: Any) -> InvalidInputError:
        """The error for a slot another live holder keeps (`holder`: its record, if readable)."""
        return BatchKeyConflictError(
            "batch_key",
            f"{self.key!r} is being run by another flow run (waited {self.wait_s:.0f}s); try again when it ends",
        )

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
        log.warning("%s was held by a run that is gone (%s); taking it over", self.what, saved.get("flow_run"))
        c.release_concurrency_slots_with_lease(saved["lease_id"])
        Variable.set(self.holder_variable, _released(saved), overwrite=True)  # its nonce mark stays
        self._holder_dead = True
        return True

    def _renew(self) -> None:
        from httpx import HTTPStatusError
        from prefect.client.orchestration import get_client

        client: Any = None  # kept across renewals: each new client builds a TLS context
        while not self._stop.wait(RENEW_S):
            asked_at = time.monotonic()
            try:
                if client is None:
                    client = get_client(sync_client=True).__enter__()
                client.renew_concurrency_lease(self.lease_id, LEASE_S)
                self.valid_until = asked_at + LEASE_S - FENCE_MARGIN_S
            except HTTPStatusError as e:
                if e.response.status_code in (404, 410):  # the server took it back: another run may hold it
                    self.lost = True
                    log.warning("%s's slot was taken back (%s): publishing stops", self.what, e)
                    break
                log.warning("could not renew %s's slot: %s", self.what, e)
                client = _closed(client)
            except Exception as e:  # the batch goes on (check() fences publishing): ending it would strand escrow
                log.warning("could not renew %s's slot: %s", self.what, e)
                client = _closed(client)
        _closed(client)


def _released(record: dict[str, Any]) -> dict[str, Any]:
    """A holder record once its slot is free: only the nonce mark the next holder waits for."""
    return {k: record[k] for k in ("address", "nonce_mark") if k in record}


def _counts(rpc: Any, address: str) -> list[str]:
    replies = rpc.batch(
        [("eth_getTransactionCount", [address, "latest"]), ("eth_getTransactionCount", [address, "pending"])]
    )
    for r in replies:
        if isinstance(r, Exception):
            raise r
    return list(replies)


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
