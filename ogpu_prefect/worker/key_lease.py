"""One live worker per provider key. Two workers with one key would take each other's work: the
second reaps the services it takes for a dead predecessor's leftovers (the live worker's among
them) and races the first for nonces. So a worker takes its key's slot before anything else: a
lease (lease.py) named after the chain and the key's address, renewed while the worker runs. A
live holder anywhere on the Prefect API makes the new worker refuse to start, naming it; a holder
on this host whose process is gone is taken over at once (its services are then reaped); one on
another host frees the slot LEASE_S after its last renewal."""

from __future__ import annotations

import logging
import time
from typing import Any

from ..chain.errors import InvalidInputError
from ..lease import LEASE_S, BatchLease


class ProviderKeyLease(BatchLease):
    """`with ProviderKeyLease(chain_id, address, worker=..., pool=...)`: this worker alone signs
    with the key of `address` (InvalidInputError naming `wallet` when a live worker does)."""

    def __init__(self, chain_id: int, address: str, *, worker: str, pool: str) -> None:
        super().__init__(f"ogpu-provider-{chain_id}-{address.lower()}", address, None, wait_s=0)
        self.what = f"provider key {address}"
        self.holder_info = {"worker": worker, "pool": pool}

    def _conflict(self, holder: Any) -> InvalidInputError:
        h = holder if isinstance(holder, dict) else {}
        who = f"worker {h.get('worker', '?')!r} of pool {h.get('pool', '?')!r} on host {h.get('host', '?')}"
        return InvalidInputError(
            "wallet",
            f"the key of {self.key} is in use by {who} (pid {h.get('pid', '?')}): two workers with one key "
            f"take each other's services and nonces. Stop that worker first (one that died frees the key "
            f"within {LEASE_S} s), or give this one its own key",
        )


class KeyGuard:
    """A worker's hold on its key's slot, kept for its whole life. A slot the server took back
    (renewals failed for longer than LEASE_S, or someone freed it) is taken again once free; while
    another live worker holds it, this one takes no new task (tasks in flight finish), so two
    workers never take tasks with one key."""

    RETRY_S = 10.0

    def __init__(self, chain_id: int, address: str, *, worker: str, pool: str, logger: Any = None) -> None:
        self._args = (chain_id, address)
        self._holder = {"worker": worker, "pool": pool}
        self._log = logger or logging.getLogger(__name__)
        self._retry_at = 0.0
        self._told: str | None = None
        self.lease: ProviderKeyLease | None = None

    def _take(self) -> ProviderKeyLease:
        return ProviderKeyLease(*self._args, **self._holder).__enter__()

    def __enter__(self) -> KeyGuard:
        self.lease = self._take()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.lease is not None:
            self.lease.__exit__(*exc)

    def may_take_tasks(self) -> bool:
        """True while the slot is this worker's; after a loss, tries to take it again (every
        RETRY_S at most) and says once why it cannot."""
        lease = self.lease
        if lease is None or not lease.lost:
            return True
        now = time.monotonic()
        if now < self._retry_at:
            return False
        self._retry_at = now + self.RETRY_S
        try:
            fresh = self._take()
        except InvalidInputError as e:  # another live worker holds the key now
            if str(e) != self._told:
                self._told = str(e)
                self._log.error("not taking tasks: %s", e)
            return False
        except Exception as e:  # the Prefect API is away: the slot cannot be asked for
            self._log.warning("could not take %s's slot again (%s): not taking tasks meanwhile", lease.what, e)
            return False
        lease.__exit__(None, None, None)  # lost: it frees nothing that is another's
        self.lease, self._told = fresh, None
        self._log.warning("took %s's slot again: taking tasks", fresh.what)
        return True
