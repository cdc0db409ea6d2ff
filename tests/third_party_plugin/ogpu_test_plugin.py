"""A third-party plugin, as a separate package would ship it: a delivery method (`majority`) and a
hardware backend (`nice_local`: the local backend with services at a lower CPU priority). The
plugin tests install it (module + dist-info with its `ogpu_prefect` entry point) into a temporary
site folder.

entry point: [ogpu_prefect] majority = ogpu_test_plugin
"""

import os

from ogpu_prefect.chain.types import DeliveryMethod
from ogpu_prefect.delivery import Decision, DeliveryStrategy
from ogpu_prefect.hookspecs import hookimpl
from ogpu_prefect.plugins.local_backend import LocalBackend


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


class NiceLocal(LocalBackend):
    """Services run as with `local`, niced so they never starve the provider's own process."""

    name = "nice_local"

    def __init__(self, owner: str = "", niceness: int = 10) -> None:
        super().__init__(owner)
        self.niceness = niceness

    def start(self, compose, environment, **kwargs):  # type: ignore[no-untyped-def]
        service = super().start(compose, environment, **kwargs)
        os.setpriority(os.PRIO_PGRP, service.pid, self.niceness)
        return service


@hookimpl
def ogpu_prefect_hardware_backends():  # type: ignore[no-untyped-def]
    return {NiceLocal.name: NiceLocal}
