"""`first_response`: for FIRST_RESPONSE sources. The chain confirms and pays the first valid
response by itself; we wait for FINALIZED and fetch the winner's payload. The waiting loop books
the winner in its provider's reputation (accepted, or unreadable); a ban cannot stop the chain
paying a banned provider that answers first: use a MANUAL_CONFIRMATION source to skip them."""

from __future__ import annotations

from ogpu_prefect.chain.types import DeliveryMethod
from ogpu_prefect.delivery import Decision, DeliveryStrategy, TaskView
from ogpu_prefect.hookspecs import hookimpl


class FirstResponse(DeliveryStrategy):
    name = "first_response"
    requires = DeliveryMethod.FIRST_RESPONSE

    def decide(self, task: TaskView) -> Decision:
        if task.status.is_final:
            return self.on_terminal(task)
        return Decision.wait()


@hookimpl
def ogpu_prefect_delivery_methods() -> dict[str, type[DeliveryStrategy]]:
    return {FirstResponse.name: FirstResponse}
