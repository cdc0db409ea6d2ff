"""A third-party delivery-method plugin, as a separate package would ship it. The plugin tests
install it (module + dist-info with its `ogpu_prefect` entry point) into a temporary site folder.

entry point: [ogpu_prefect] majority = ogpu_test_plugin
"""

from ogpu_prefect.chain.types import DeliveryMethod
from ogpu_prefect.delivery import Decision, DeliveryStrategy
from ogpu_prefect.hookspecs import hookimpl


class Majority(DeliveryStrategy):
    """Confirms the response the most providers agree on, once `quorum` answered."""

    name = "majority"
    requires = DeliveryMethod.MANUAL_CONFIRMATION

    def __init__(self, quorum: int = 3) -> None:
        self.quorum = quorum

    def decide(self, task):  # type: ignore[no-untyped-def]
        if len(task.responses) < self.quorum:
            return Decision.wait()
        votes: dict[str, list] = {}
        for r in task.responses:
            votes.setdefault(str(r.payload), []).append(r)
        return Decision.confirm(max(votes.values(), key=len)[0])


@hookimpl
def ogpu_prefect_delivery_methods():  # type: ignore[no-untyped-def]
    return {"majority": Majority}
