"""One live worker per provider key. Two workers with one key would take each other's work: the
second reaps the services it takes for a dead predecessor's leftovers (the live worker's among
them) and races the first for nonces. So a worker takes its key's slot before anything else: a
lease (lease.py) named after the chain and the key's address, renewed while the worker runs. A
live holder anywhere on the Prefect API makes the new worker refuse to start, naming it; a holder
on this host whose process is gone is taken over at once (its services are then reaped); one on
another host frees the slot LEASE_S after its last renewal."""

from __future__ import annotations

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
