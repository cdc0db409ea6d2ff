"""`consensus`: for MANUAL_CONFIRMATION sources. Waits until `k` responses agree (their payloads
are equal, or equal under `key(payload)`), then confirms the cheapest of the agreeing ones. One of
the competition models OpenGPU lists as planned.

Options: `k` (default 2), `key` (a callable(payload) -> hashable; default: the canonical JSON of
the payload's `result`, or of the whole payload when it has none). Responses are envelopes
(`{"task", "provider", "result"}`): agreeing providers still store different documents, so
their URLs differ (the Nexus refuses a response whose URL copies another's).

Once a group agrees, the responses outside it are marked refused (`Rejection.DISAGREEMENT`); a
payload `key` cannot read is refused at once (`Rejection.UNREADABLE`). Both count against their
providers' reputation.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from ogpu_prefect.chain.types import DeliveryMethod
from ogpu_prefect.delivery import Decision, DeliveryStrategy, Rejection, ResponseView, TaskView
from ogpu_prefect.hookspecs import hookimpl


def canonical(payload: Any) -> str:
    if isinstance(payload, dict) and "result" in payload:
        payload = payload["result"]
    return json.dumps(payload, sort_keys=True, separators=(",", ":"))


class Consensus(DeliveryStrategy):
    name = "consensus"
    requires = DeliveryMethod.MANUAL_CONFIRMATION

    def __init__(self, k: int = 2, key: Callable[[Any], Any] | None = None) -> None:
        if k < 1:
            raise ValueError("k: at least 1")
        self.k = k
        self.key = key or canonical

    def decide(self, task: TaskView) -> Decision:
        if task.status.is_final:
            return self.on_terminal(task)
        groups: dict[Any, list[ResponseView]] = defaultdict(list)
        for r in task.responses:
            if r.rejection is not None or r.payload is None:
                continue
            try:
                groups[self.key(r.payload)].append(r)
            except Exception:
                r.reject(Rejection.UNREADABLE)
        agreed = [g for g in groups.values() if len(g) >= self.k]
        if not agreed:
            return Decision.wait()
        best = max(agreed, key=len)
        for group in groups.values():
            if group is not best:
                for r in group:
                    r.reject(Rejection.DISAGREEMENT)
        return Decision.confirm(min(best, key=lambda r: (r.payment, r.seen_at)))


@hookimpl
def ogpu_prefect_delivery_methods() -> dict[str, type[DeliveryStrategy]]:
    return {Consensus.name: Consensus}
