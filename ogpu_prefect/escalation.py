"""Escalation: what a batch pays for the inputs whose tasks expired untaken (nobody attempted
them), round after round. A policy is a plugin (hook `ogpu_prefect_escalation_policies`); the
built-in `escalate` multiplies the payment by `factor` each round, up to `cap`.

The policy proposes; `escalated_payment` decides: never below the payment of the round before,
never above the policy's answer, and never so high that the round's tasks would hold more escrow
than the batch's `budget` leaves. `run_batch(escalation="escalate", escalation_options=...)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from .chain.errors import InvalidInputError


@dataclass(frozen=True)
class EscalationPolicy:
    """The base of escalation policies (frozen dataclasses; their fields are the options): keeps
    the payment as it is. Subclass and override `next_payment`."""

    name: ClassVar[str] = ""

    def next_payment(self, payment: int, round_no: int) -> int:
        """The payment (wei) for round `round_no` (1, 2, ...) of inputs that expired untaken at
        `payment` in the round before."""
        return payment

    def check(self, payment: int) -> None:
        """Refuses options that cannot work with the batch's first `payment` (InvalidInputError
        naming the option); called before any transaction."""


def parse_escalation(name: Any, options: Any, payment: int) -> EscalationPolicy | None:
    """The escalation policy `name` configured with `options`, checked against the batch's
    `payment`; None for None or "off". Typed errors name `escalation` or
    `escalation_options[.option]`."""
    from .plugin_manager import PluginKind
    from .validation import configured_policy

    if (name is None or name == "off") and options:
        raise InvalidInputError("escalation_options", "options given, but no escalation policy")
    policy = configured_policy(PluginKind.ESCALATION_POLICY, "escalation", name, options)
    if policy is not None:
        try:
            policy.check(payment)
        except InvalidInputError as e:
            raise InvalidInputError(f"escalation_options.{e.field}", str(e).partition(": ")[2]) from None
    return policy  # type: ignore[no-any-return]


def escalated_payment(
    policy: EscalationPolicy, payment: int, round_no: int, count: int, held: int, budget: int | None
) -> int:
    """The payment for round `round_no`'s `count` tasks: the policy's, lowered to what the budget
    leaves (`budget - held`, for all `count` of them), never below `payment`."""
    proposed = policy.next_payment(payment, round_no)
    if budget is not None and count:
        proposed = min(proposed, (budget - held) // count)
    return max(proposed, payment)
