"""One account's nonces shared by every sender that uses its key.

Senders of one key in one process share a lock, and processes on one machine share a file lock
(`fcntl.flock` under the temp dir, so different working directories still meet; one per key and node
endpoint, so two local devnets with the same chain id do not wait for each other). A sender holds it
from reserving nonces until its transactions are with the node, and reads the node's pending count
each time it takes it: whoever takes it next sees every nonce already used. Senders on other
machines cannot share it; `TxSender` resolves their conflicts (see tx.py).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

FILE_LOCK_WAIT_S = 120.0
"""Seconds to wait for another process's hold on the key before going on without the file lock."""
log = logging.getLogger(__name__)
_registry_lock = threading.Lock()
_locks: dict[tuple[int, str, str], WalletLock] = {}


class WalletLock:
    """Held by one sender at a time (in any of its threads: a sender's pipelined send thread
    re-signs lost transactions while its caller holds the lock); exclusive across senders here
    and processes on this machine."""

    def __init__(self, chain_id: int, address: str, endpoint: str = "") -> None:
        self._cond = threading.Condition()
        self._owner: object | None = None
        self._threads: dict[int, int] = {}  # thread id -> its holds (nested ones included); empty: free
        self._fd: int | None = None
        directory = Path(tempfile.gettempdir()) / "ogpu-prefect-wallets"
        directory.mkdir(parents=True, exist_ok=True)
        where = hashlib.sha256(endpoint.encode()).hexdigest()[:12] if endpoint else "any"
        self.path = directory / f"{chain_id}-{address.lower()}-{where}.lock"

    @contextmanager
    def held(self, owner: object, on_take: Callable[[], None] | None = None) -> Iterator[bool]:
        """Holds the lock for `owner`; yields True when this call took it (the outermost hold).
        `on_take` runs once the lock is taken and before the owner's other threads may enter (a
        sender re-reads its nonce there: a thread that signed in between would share one). If it
        raises, the lock is let go and a waiting thread of the owner takes it afresh."""
        me = threading.get_ident()
        with self._cond:
            while True:
                if self._owner is None:
                    self._owner, outermost = owner, True
                    break
                if self._owner is owner and self._fd is not None:  # the owner's hold is ready
                    outermost = False
                    break
                self._cond.wait()
            self._threads[me] = self._threads.get(me, 0) + 1
        try:
            if outermost:  # another process may hold it: wait outside our own condition
                fd = self._take_file_lock()
                try:
                    if on_take is not None:
                        on_take()
                except BaseException:
                    _let_go(fd)
                    raise
                with self._cond:
                    self._fd = fd
                    self._cond.notify_all()
            yield outermost
        finally:
            with self._cond:
                self._threads[me] -= 1
                if not self._threads[me]:
                    del self._threads[me]
                if not self._threads:
                    if self._fd is not None:
                        _let_go(self._fd)
                        self._fd = None
                    self._owner = None
                    self._cond.notify_all()

    def others_inside(self) -> bool:
        """Whether a thread other than this one is inside the hold."""
        me = threading.get_ident()
        with self._cond:
            return any(t != me for t in self._threads)

    def _take_file_lock(self) -> int:
        """The file lock's descriptor; -1 when another process held it past FILE_LOCK_WAIT_S (a
        stuck one must not stop us: the lock spares conflicts, TxSender resolves them anyway)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        give_up_at = time.monotonic() + FILE_LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if time.monotonic() > give_up_at:
                    os.close(fd)
                    log.warning(
                        "another process has held %s for %.0fs: going on without it", self.path, FILE_LOCK_WAIT_S
                    )
                    return -1
                time.sleep(0.01)


def _let_go(fd: int) -> None:
    """Releases a file lock taken by `_take_file_lock` (-1: none was taken)."""
    if fd >= 0:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


class NonceCounter:
    """A sender's next nonce: read from the node (`read_pending`, its pending count) when unknown,
    then counted up locally while the sender holds the key's lock."""

    def __init__(self, wallet: WalletLock, read_pending: Callable[[], int]) -> None:
        self._wallet, self._read_pending = wallet, read_pending
        self._lock = threading.Lock()
        self._next: int | None = None
        self._stale = False

    def forget(self) -> None:
        """At each take of the key's lock: every earlier holder's transactions are with the node."""
        with self._lock:
            self._next, self._stale = None, False

    def resync(self) -> None:
        """Signed transactions were never sent: read the count again, but only once no other
        thread of the sender is inside the lock (the node's count would miss what it signed and
        has not sent yet), at the latest at the next take."""
        with self._lock:
            self._stale = True

    def take(self, n: int) -> list[int]:
        """n consecutive nonces; call inside the key's lock."""
        with self._lock:
            if self._stale and not self._wallet.others_inside():
                self._next, self._stale = None, False
            if self._next is None:
                self._next = self._read_pending()
            start, self._next = self._next, self._next + n
            return list(range(start, start + n))


def wallet_lock(chain_id: int, address: str, endpoint: str = "") -> WalletLock:
    """The lock of (chain, account) in this process: one per key, however many senders use it.
    `endpoint` (the node's URL) tells apart local chains that share a chain id (devnets)."""
    key = (chain_id, address.lower(), endpoint)
    with _registry_lock:
        lock = _locks.get(key)
        if lock is None:
            lock = _locks[key] = WalletLock(chain_id, address, endpoint)
        return lock
