"""Built-in escalation policy (ogpu_prefect.escalation):

- `escalate`: each round that re-publishes inputs whose tasks expired untaken pays `factor` times
  the round before (default 1.5), never more than `cap` (an amount: "0.05 OGPU", or wei; default
  no cap but the batch's budget).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ogpu_prefect.amounts import format_ogpu, parse_amount
from ogpu_prefect.chain.errors import InvalidInputError
from ogpu_prefect.escalation import EscalationPolicy
from ogpu_prefect.hookspecs import hookimpl
from ogpu_prefect.validation import check_number


@dataclass(frozen=True)
class Escalate(EscalationPolicy):
    name = "escalate"

    factor: float = 1.5
    cap: Any = None

    def __post_init__(self) -> None:
        check_number("factor", self.factor, exclusive_minimum=1, maximum=10)
        if self.cap is not None:
            object.__setattr__(self, "cap", parse_amount("cap", self.cap))

    def check(self, payment: int) -> None:
        if self.cap is not None and self.cap < payment:
            raise InvalidInputError("cap", f"{format_ogpu(self.cap)} is below the payment ({format_ogpu(payment)})")

    def next_payment(self, payment: int, round_no: int) -> int:
        raised = int(payment * self.factor)
        return raised if self.cap is None else min(raised, self.cap)


@hookimpl
def ogpu_prefect_escalation_policies() -> dict[str, type[EscalationPolicy]]:
    return {Escalate.name: Escalate}
