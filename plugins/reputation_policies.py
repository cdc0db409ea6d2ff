"""Built-in provider-reputation policies (ogpu_prefect.reputation).

- `default`: ban after 3 strikes for an hour; strikes older than an hour are forgotten; a task
  whose every response was refused is given up after 30 s (3 s once every attempter answered).
- `strict`: ban at the first strike, for a day; a refused task is given up after 10 s.

Both take the options `k`, `forgive_s`, `reject_grace_s` and `count` (the reasons that are strikes).
"""

from __future__ import annotations

from dataclasses import dataclass

from ogpu_prefect.hookspecs import hookimpl
from ogpu_prefect.reputation import ReputationPolicy


@dataclass(frozen=True)
class Strict(ReputationPolicy):
    name = "strict"

    k: int = 1
    forgive_s: float = 86_400.0
    reject_grace_s: float = 10.0


@hookimpl
def ogpu_prefect_reputation_policies() -> dict[str, type[ReputationPolicy]]:
    return {ReputationPolicy.name: ReputationPolicy, Strict.name: Strict}
