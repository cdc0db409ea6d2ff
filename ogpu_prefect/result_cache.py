"""Never paying twice for the same input: finalized results kept in Prefect's result storage,
keyed on the network, the source, the function and the input.

The key is Prefect's cache key, so the three ways of running a source's function share one cache:
an `OGPUFunction` call (functions.py) is a Prefect task whose `cache_key_fn` is `CallKeys.key`
(Prefect looks it up before the call runs and persists what it returns), and `run_batch` and the
streaming flows read and write the same records through `prefect.results.ResultStore` with the
same keys (`ResultCache`). What is stored is what the call returns: the result payload.

The network is its chain id, its genesis block's hash and its contract addresses: two devnets at
the same addresses (a fresh anvil deploys them there again) never share answers.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .models import TaskInput, TaskResult

if TYPE_CHECKING:
    from prefect.results import ResultStore

    from .chain.connection import Chain

log = logging.getLogger(__name__)

KEY_PREFIX = "ogpu-result-"


def network_identity(chain: Chain) -> str:
    """The network a result was computed on: chain id, genesis hash and contract addresses (one
    read of block 0)."""
    net = chain.network
    genesis = chain.rpc.call("eth_getBlockByNumber", ["0x0", False])["hash"]
    parts = [net.chain_id, genesis, net.nexus, net.controller, net.terminal, net.vault]
    return hashlib.sha256(json.dumps([str(p).lower() for p in parts]).encode()).hexdigest()[:32]


class CallKeys:
    """The cache keys of one network and source: `key(item)` for an input (a TaskInput)."""

    def __init__(self, network_id: str, source: str) -> None:
        self.network_id, self.source = network_id, source.lower()

    def key(self, item: TaskInput) -> str:
        body = json.dumps(
            [self.network_id, self.source, item.function_name, item.data],
            sort_keys=True,
            separators=(",", ":"),
            default=str,
        )
        return KEY_PREFIX + hashlib.sha256(body.encode()).hexdigest()


class ResultCache:
    """The cache as the batch flows use it: `lookup` before publishing, `fill` once finalized."""

    def __init__(self, keys: CallKeys, store: ResultStore | None = None) -> None:
        from prefect.results import ResultStore

        self.keys = keys
        self.store = store if store is not None else ResultStore()  # Prefect's default result storage
        self.hits = 0

    @classmethod
    def open(cls, chain: Chain, source: str, enabled: bool = True) -> ResultCache | None:
        """The cache for `source` on `chain`, or None when the caller turned it off."""
        return cls(CallKeys(network_identity(chain), source)) if enabled else None

    def get(self, item: TaskInput) -> tuple[bool, Any]:
        """(found, stored result) for one input; an unreadable record counts as absent."""
        key = self.keys.key(item)
        try:
            if not self.store.exists(key):
                return False, None
            record = self.store.read(key)
        except Exception as e:  # a broken record costs a publication, never the batch
            log.warning("result cache: could not read %s (%s); publishing the input", key, e)
            return False, None
        self.hits += 1
        return True, record.result

    def has(self, item: TaskInput) -> bool:
        """Whether an answer for this input is stored (unread); a storage error raises, as a
        caller deciding to publish must not take "unreadable" for "absent"."""
        return bool(self.store.exists(self.keys.key(item)))

    def lookup(self, items: Sequence[TaskInput]) -> dict[int, Any]:
        """Position -> stored result, for the inputs already answered."""
        found: dict[int, Any] = {}
        for i, item in enumerate(items):
            hit, value = self.get(item)
            if hit:
                found[i] = value
        return found

    def fill(self, item: TaskInput, result: Any) -> None:
        """Keeps a finalized input's result (what a later call, batch or flow returns instead)."""
        try:
            self.store.write(obj=result, key=self.keys.key(item))
        except Exception as e:  # the result is paid and returned; only its reuse is lost
            log.warning("result cache: could not store a result (%s)", e)


def cached_result(index: int, value: Any) -> TaskResult:
    """The TaskResult of an input answered from the cache: nothing published, nothing paid."""
    return TaskResult(index=index, status="finalized", result=value, cached=True)


__all__ = ["CallKeys", "ResultCache", "cached_result", "network_identity"]
