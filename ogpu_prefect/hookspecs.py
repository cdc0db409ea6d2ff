"""Every pluggy hook of ogpu-prefect, in one module. Project name and entry-point group:
`ogpu_prefect`. Built-in plugins (plugins/) register through the same entry points as any
installed third-party package.

A plugin is a module (or object) with functions marked `@hookimpl`:

    from ogpu_prefect.hookspecs import hookimpl

    @hookimpl
    def ogpu_prefect_delivery_methods():
        return {"my_method": MyStrategy}
"""

from __future__ import annotations

from typing import Any

import pluggy

PROJECT = "ogpu_prefect"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def ogpu_prefect_delivery_methods() -> dict[str, type[Any]]:
    """Return the delivery methods this plugin provides, by name: subclasses of
    `ogpu_prefect.delivery.DeliveryStrategy`. A delivery method decides, from a task's on-chain
    state and its responses' payloads, when to wait, which response to confirm, and when to give
    up. Names must be unique across all installed plugins."""


@hookspec
def ogpu_prefect_hardware_backends() -> dict[str, type[Any]]:
    """Return the hardware backends this plugin provides, by name: subclasses of
    `ogpu_prefect.backends.HardwareBackend`. A backend runs a source's docker-compose service for
    one environment (cpu, nvidia, amd), or without Docker, and reports which environments the host
    can serve. The provider worker picks one by name. Names must be unique across plugins."""


@hookspec
def ogpu_prefect_task_policies() -> dict[str, type[Any]]:
    """Return the task policies this plugin provides, by name: subclasses of
    `ogpu_prefect.worker.policy.TaskPolicy`. A policy decides, for each task published on a source
    the provider serves, whether the provider worker attempts it and which payment it asks
    (the suggested payment of manual-confirmation sources). Names must be unique across plugins."""


@hookspec
def ogpu_prefect_reputation_policies() -> dict[str, type[Any]]:
    """Return the provider-reputation policies this plugin provides, by name: subclasses of
    `ogpu_prefect.reputation.ReputationPolicy` (frozen dataclasses; their fields are the options).
    A policy decides, from a provider's record (refusals by reason, accepted results, strikes,
    last seen, ban) and the time, how a refusal or an accepted result changes the record, whether
    the provider is banned (its responses hidden from every delivery method) and when it is
    forgiven. `run_batch(reputation=name, reputation_options=...)` picks one. Names must be
    unique across plugins; "off" is reserved."""


@hookspec
def ogpu_prefect_escalation_policies() -> dict[str, type[Any]]:
    """Return the escalation policies this plugin provides, by name: subclasses of
    `ogpu_prefect.escalation.EscalationPolicy` (frozen dataclasses; their fields are the options).
    A policy says what a batch pays, round after round, for the inputs whose tasks expired with
    nobody attempting them; the batch keeps it within its budget and never lowers the payment.
    `run_batch(escalation=name, escalation_options=...)` picks one. Names must be unique across
    plugins; "off" is reserved."""
