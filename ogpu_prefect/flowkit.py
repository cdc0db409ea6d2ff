"""Prefect-side pieces of the money-safe flows: a flow whose parameters never carry a key into
Prefect's database, and the hook that settles a batch's escrow when its flow run fails, crashes or
is cancelled (batch.py)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from prefect import Flow
from prefect.client.schemas.objects import FlowRun
from prefect.states import State

from .chain.errors import InvalidInputError
from .validation import contains_secret, redact, refuse_secret

log = logging.getLogger(__name__)


class RedactingFlow(Flow[Any, Any]):
    """A Flow whose stored parameters have every key-shaped string replaced (a key passed where a
    block name or address belongs must not reach the API's database, logs or UI); the flow itself
    then refuses the value with a typed error."""

    def serialize_parameters(self, parameters: dict[str, Any]) -> dict[str, Any]:
        return redact(super().serialize_parameters(parameters))  # type: ignore[no-any-return]

    def validate_parameters(self, parameters: dict[str, Any]) -> dict[str, Any]:
        """Prefect's type check of the parameters, after refusing any key among them (Prefect logs
        the values of parameters it refuses), and failing with an InvalidInputError naming the
        parameter, like the flow's own checks."""
        from prefect.exceptions import ParameterTypeError

        for name, value in parameters.items():
            if isinstance(value, (list, tuple)):
                for i, item in enumerate(value):
                    refuse_secret(f"{name}[{i}]", item)
            else:
                refuse_secret(name, value)
        try:
            return super().validate_parameters(parameters)
        except ParameterTypeError as e:  # "...parameters:\n - payment: Input should be ..."
            name, _, why = str(e).partition("\n - ")[2].partition("\n")[0].partition(": ")
            raise InvalidInputError(name.split(".")[0] or "parameters", why or str(e)) from None


def redacting_flow(**options: Any) -> Callable[[Callable[..., Any]], RedactingFlow]:
    """`@flow(**options)`, as a RedactingFlow."""

    def decorate(fn: Callable[..., Any]) -> RedactingFlow:
        return RedactingFlow(fn=fn, **options)

    return decorate


def redact_stored_parameters() -> None:
    """A run created through the API (a deployment run, the UI) stored its parameters as given:
    redact any key among them on the server before the flow refuses it."""
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run

    params, run_id = flow_run.parameters, flow_run.get_id()
    if not run_id or not contains_secret(params):
        return
    with get_client(sync_client=True) as client:
        client.update_flow_run(run_id, parameters=redact(json.loads(json.dumps(params, default=str))))


def settle_on_exit(flow: Flow[Any, Any], flow_run: FlowRun, state: State[Any]) -> None:
    """on_failure / on_crashed / on_cancellation hook of run_batch: settles the batch's escrow
    (cancel NEW tasks, reclaim expired ones where possible) and records where every task's escrow
    stands as the artifact `ogpu-batch-escrow`. In the flow's own process it uses the running
    batch's ledger; elsewhere (the runner of a served deployment) it finds the batch's tasks on
    chain, which needs the network, wallet and storage given as saved block names."""
    from .batch import batch_tasks_on_chain, find_batch, live_ledger
    from .escrow import settle
    from .tasks import make_client

    params = flow_run.parameters or {}
    key = params.get("batch_key") or str(flow_run.id)
    try:
        ledger = live_ledger(key, drop=True)
        if ledger is not None:
            report = ledger.settle()
        else:
            record = find_batch(key)
            if record is None:
                return  # it never got as far as publishing
            client = make_client(params.get("network"), params.get("wallet"), params.get("storage"))
            tasks, _ = batch_tasks_on_chain(client, record)
            report = settle(client, tasks)
    except Exception as e:  # a hook must not hide the run's own failure
        log.error(
            "could not settle the escrow of batch %s after %s: %s (a run with batch_key=%r settles it)",
            key,
            state.type.value.lower(),
            e,
            key,
        )
        return
    log.warning("batch %s %s; escrow settled: %s", key, state.type.value.lower(), report.summary())
    from .batch_report import escrow_markdown

    _artifact(flow_run, escrow_markdown(report, key))


def _artifact(flow_run: FlowRun, markdown: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import ArtifactCreate

    try:
        with get_client(sync_client=True) as client:
            client.create_artifact(
                ArtifactCreate(
                    key="ogpu-batch-escrow",
                    type="markdown",
                    data=markdown,
                    flow_run_id=flow_run.id,
                    description="Where the escrow stands",
                )
            )
    except Exception as e:
        log.warning("could not record the escrow artifact: %s", e)
