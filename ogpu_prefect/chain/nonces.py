"""One account's nonces shared by every sender that uses its key.

Senders of one key in one process share a lock, and processes on one machine share a file lock
(`fcntl.flock` under the temp dir, so different working directories still meet). A sender holds it
from reserving nonces until its transactions are with the node, and reads the node's pending count
each time it takes it: whoever takes it next sees every nonce already used. Senders on other
machines cannot share it; `TxSender` resolves their conflicts (see tx.py).
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_registry_lock = threading.Lock()
_locks: dict[tuple[int, str], WalletLock] = {}


class WalletLock:
    """Re-entrant within a thread; exclusive across threads and processes of this machine."""

    def __init__(self, chain_id: int, address: str) -> None:
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._fd: int | None = None
        directory = Path(tempfile.gettempdir()) / "ogpu-prefect-wallets"
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{chain_id}-{address.lower()}.lock"

    @contextmanager
    def held(self) -> Iterator[bool]:
        """Holds the lock; yields True when this call took it (the outermost holder)."""
        with self._thread_lock:
            outermost = self._depth == 0
            if outermost:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            self._depth += 1
            try:
                yield outermost
            finally:
                self._depth -= 1
                if outermost and self._fd is not None:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)
                    os.close(self._fd)
                    self._fd = None


def wallet_lock(chain_id: int, address: str) -> WalletLock:
    """The lock of (chain, account) in this process: one per key, however many senders use it."""
    key = (chain_id, address.lower())
    with _registry_lock:
        lock = _locks.get(key)
        if lock is None:
            lock = _locks[key] = WalletLock(chain_id, address)
        return lock
