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
        self._depth = 0
        self._fd: int | None = None
        directory = Path(tempfile.gettempdir()) / "ogpu-prefect-wallets"
        directory.mkdir(parents=True, exist_ok=True)
        where = hashlib.sha256(endpoint.encode()).hexdigest()[:12] if endpoint else "any"
        self.path = directory / f"{chain_id}-{address.lower()}-{where}.lock"

    @contextmanager
    def held(self, owner: object, on_take: Callable[[], None] | None = None) -> Iterator[bool]:
        """Holds the lock for `owner`; yields True when this call took it (the outermost hold).
        `on_take` runs once the lock is taken and before the owner's other threads may enter (a
        sender re-reads its nonce there: a thread that signed in between would share one)."""
        with self._cond:
            while self._owner is not None and self._owner is not owner:
                self._cond.wait()
            outermost = self._owner is None
            if outermost:
                self._owner = owner
            else:
                while self._fd is None:  # the outermost hold is still taking the file lock
                    self._cond.wait()
            self._depth += 1
        try:
            if outermost:  # another process may hold it: wait outside our own condition
                fd = self._take_file_lock()
                try:
                    if on_take is not None:
                        on_take()
                finally:
                    with self._cond:
                        self._fd = fd
                        self._cond.notify_all()
            yield outermost
        finally:
            with self._cond:
                self._depth -= 1
                if self._depth == 0:
                    if self._fd is not None:
                        if self._fd >= 0:
                            fcntl.flock(self._fd, fcntl.LOCK_UN)
                            os.close(self._fd)
                        self._fd = None
                    self._owner = None
                    self._cond.notify_all()

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


def wallet_lock(chain_id: int, address: str, endpoint: str = "") -> WalletLock:
    """The lock of (chain, account) in this process: one per key, however many senders use it.
    `endpoint` (the node's URL) tells apart local chains that share a chain id (devnets)."""
    key = (chain_id, address.lower(), endpoint)
    with _registry_lock:
        lock = _locks.get(key)
        if lock is None:
            lock = _locks[key] = WalletLock(chain_id, address, endpoint)
        return lock
