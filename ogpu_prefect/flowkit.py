"""Prefect-side pieces of the money-safe flows: a flow whose parameters never carry a key into
Prefect's database (and whose amounts are stored in OGPU), the parameter types that make its run
form (block pickers, amounts with a unit, the installed delivery methods, the manual policies), and
the hook that settles a batch's escrow when its flow run fails, crashes or is cancelled (batch.py).

The flows' annotations are evaluated at import (no `from __future__ import annotations` there): a
served flow is pickled by value into its run's process, and names used only in string annotations
would not travel with it."""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from typing import Annotated, Any

from prefect import Flow
from prefect.client.schemas.objects import FlowRun
from prefect.states import State

from .amounts import Amount, amount_problem, format_ogpu, is_amount
from .blocks import OGPUNetwork, OGPUStorage, OGPUWallet
from .chain.errors import InvalidInputError
from .validation import contains_secret, redact, refuse_secret

log = logging.getLogger(__name__)


# ---- parameter types: what the run form shows ----


class _OrBlockName:
    """`X | str` where X is a block: the form offers the block picker first, then a saved block's name."""

    def __get_pydantic_json_schema__(self, core: Any, handler: Any) -> dict[str, Any]:
        schema = handler(core)
        for member in schema.get("anyOf", []):
            if member.get("type") == "string":
                member.update(title="name of a saved block", minLength=1)
            elif "$ref" in member:
                # The picker sends {"$ref": {"block_document_id": ...}}, which Prefect's schema check
                # takes as either the block's data or a reference (`oneOf`); for a block whose fields
                # all have defaults (OGPUStorage) it is both, and the check refuses it. Requiring a
                # field of the data leaves the reference one reading (the UI keeps `required`).
                definition = handler.resolve_ref_schema(member)
                if not definition.get("required") and definition.get("properties"):
                    definition["required"] = [next(iter(definition["properties"]))]
        return schema  # type: ignore[no-any-return]


class _OrNone:
    """`X | None`: in the run form a switch between X (titled `value`) and None (titled `none`:
    what leaving it out means). The form sends null for an empty optional field, so null stays valid."""

    def __init__(self, value: str, none: str) -> None:
        self.value, self.none = value, none

    def __get_pydantic_json_schema__(self, core: Any, handler: Any) -> dict[str, Any]:
        schema = handler(core)
        for member in schema.get("anyOf", []):
            member["title"] = self.none if member.get("type") == "null" else self.value
        return schema  # type: ignore[no-any-return]


def or_none(annotation: Any, value: str, none: str) -> Any:
    """`annotation | None`, its run form a switch between `value` and `none` (what None means)."""
    return Annotated[annotation | None, _OrNone(value, none)]


class _InstalledDeliveryMethods:
    """A delivery method's name; the form lists the delivery methods installed where the
    deployment was made (plugins.md). Any name is checked against those installed at run time."""

    def __get_pydantic_json_schema__(self, core: Any, handler: Any) -> dict[str, Any]:
        from .plugin_manager import PluginError, PluginKind, installed

        schema = handler(core)
        try:
            schema["enum"] = sorted(installed(PluginKind.DELIVERY_METHOD))
        except PluginError:
            pass
        return schema  # type: ignore[no-any-return]


class ManualPolicy(StrEnum):
    """How the `manual` delivery method picks the response it confirms."""

    FIRST = "first"
    LOWEST_PRICE = "lowest_price"


DELIVERY_OPTIONS_FORM = {
    "type": "object",
    "additionalProperties": True,
    "properties": {
        "policy": {
            "title": "policy",
            "type": "string",
            "enum": [p.value for p in ManualPolicy],
            "description": "manual: confirm the first valid response, or the cheapest after `window` seconds",
        },
        "window": {
            "title": "window",
            "type": "number",
            "exclusiveMinimum": 0,
            "description": "manual (lowest_price), auction: seconds to collect responses (default 5)",
        },
        "enough": {
            "title": "enough",
            "type": "integer",
            "minimum": 1,
            "description": "manual (lowest_price): confirm as soon as this many valid responses are in",
        },
        "k": {"title": "k", "type": "integer", "minimum": 1, "description": "consensus: agreeing providers needed"},
    },
}


class _DeliveryOptionsForm:
    def __get_pydantic_json_schema__(self, core: Any, handler: Any) -> dict[str, Any]:
        options = {**copy.deepcopy(DELIVERY_OPTIONS_FORM), "title": "options"}
        return {"anyOf": [options, {"type": "null", "title": "the method's defaults"}]}


Network = Annotated[OGPUNetwork | str, _OrBlockName()]
"""An OGPUNetwork block, or the name of a saved one (a block picker in the run form)."""
Wallet = Annotated[OGPUWallet | str, _OrBlockName()]
"""An OGPUWallet block, or the name of a saved one (a block picker in the run form)."""
Storage = Annotated[OGPUStorage | str, _OrBlockName()]
"""An OGPUStorage block, or the name of a saved one (a block picker in the run form)."""
DeliveryName = Annotated[str, _InstalledDeliveryMethods()]
"""The name of an installed delivery method (a drop-down in the run form)."""
DeliveryOptions = Annotated[dict[str, Any] | None, _DeliveryOptionsForm()]
"""The delivery method's options: a dict (the form has fields for the built-in methods' options)."""


FunctionName = or_none(str, "name", "named by each input")
"""The service function for inputs that do not name one."""
Budget = or_none(Amount, "amount", "no ceiling")
"""An escrow ceiling (an Amount), or None for no ceiling."""
Seconds = or_none(int, "seconds", "the default")
"""Whole seconds, or None for the parameter's default."""
BatchKey = or_none(str, "key", "this flow run's id")
"""A batch's identity, or None: the flow run's id."""


class RedactingFlow(Flow[Any, Any]):
    """A Flow whose stored parameters have every key-shaped string replaced (a key passed where a
    block name or address belongs must not reach the API's database, logs or UI; the flow itself
    then refuses the value with a typed error) and its `Amount` parameters written in OGPU. A run
    it starts from Python carries `run_tags` (deployments carry their own tags; tag_run adds them
    where missing)."""

    def __init__(self, *args: Any, run_tags: Iterable[str] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.run_tags = tuple(run_tags)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from prefect import tags

        with tags(*self.run_tags):
            return super().__call__(*args, **kwargs)

    def with_options(self, *args: Any, **kwargs: Any) -> RedactingFlow:
        from .prefect_compat import keep_flow_class

        return keep_flow_class(super().with_options(*args, **kwargs), self)

    def serialize_parameters(self, parameters: dict[str, Any]) -> dict[str, Any]:
        shown = dict(parameters)
        for name in self._amount_parameters():
            wei, _ = amount_problem(shown.get(name))
            if wei is not None and name in shown:
                shown[name] = format_ogpu(wei)  # "0.01 OGPU": exact, and what the run form takes back
        return redact(super().serialize_parameters(shown))  # type: ignore[no-any-return]

    def _amount_parameters(self) -> list[str]:
        import typing

        try:
            hints = typing.get_type_hints(self.fn, include_extras=True)
        except Exception:  # an annotation that does not resolve: nothing is shown in OGPU
            return []
        return [name for name, hint in hints.items() if name != "return" and is_amount(hint)]

    def validate_parameters(self, parameters: dict[str, Any]) -> dict[str, Any]:
        """Prefect's type check of the parameters, after refusing any key among them (Prefect logs
        the values of parameters it refuses), and failing with an InvalidInputError naming the
        parameter, like the flow's own checks."""
        from prefect.exceptions import ParameterTypeError

        try:
            for name, value in parameters.items():
                if isinstance(value, (list, tuple)):
                    for i, item in enumerate(value):
                        refuse_secret(f"{name}[{i}]", item)
                else:
                    refuse_secret(name, value)
        except InvalidInputError:
            try:  # a run created through the API stored the key as given: redact it there first
                redact_stored_parameters()
            except Exception as e:
                log.warning("could not redact this run's stored parameters: %s", type(e).__name__)
            raise
        try:
            return super().validate_parameters(parameters)
        except ParameterTypeError as e:
            from .prefect_compat import parameter_errors

            name, why = next(iter(parameter_errors(e)), ("parameters", str(e)))
            raise InvalidInputError(name, why.removeprefix("Value error, ")) from None  # an Amount's own message


def batch_flow(**options: Any) -> Callable[[Callable[..., Any]], RedactingFlow]:
    """`@flow(**options)` for a flow that publishes tasks: a RedactingFlow (`run_tags=`: the tags
    of the runs it starts) that prints to its logs and settles its batch's escrow when it fails,
    crashes or is cancelled."""
    hooks = [settle_on_exit]
    options = {"log_prints": True, "on_failure": hooks, "on_crashed": hooks, "on_cancellation": hooks, **options}

    def decorate(fn: Callable[..., Any]) -> RedactingFlow:
        return RedactingFlow(fn=fn, **options)

    return decorate


def served_parameters() -> dict[str, str]:
    """The parameters a served batch flow's deployment takes from the settings (`python
    flows/<flow>.py`): `served_payment` (or `served_payment_wei` where the payment is not set;
    default 0.01 OGPU) and the blocks `./dev demo` saves (`served_network_block`, ...)."""
    from .settings import get_settings

    s = get_settings()
    payment = s.served_payment
    if "served_payment" not in s.model_fields_set and s.served_payment_wei is not None:
        payment = f"{s.served_payment_wei} wei"
    return {
        "payment": payment,
        "network": s.served_network_block,
        "wallet": s.served_wallet_block,
        "storage": s.served_storage_block,
    }


def tag_run(wanted: Iterable[str]) -> None:
    """Adds the tags in `wanted` that this flow run lacks (a deployment's run has the deployment's
    tags; one without ours still gets them, so every batch is found by the same tags)."""
    from prefect.runtime import flow_run

    run_id, have = flow_run.get_id(), list(flow_run.get_tags() or [])
    missing = [t for t in wanted if t not in have]
    if not run_id or not missing:
        return
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            client.update_flow_run(run_id, tags=[*have, *missing])
    except Exception as e:  # a label is not worth failing a batch over
        log.warning("could not tag flow run %s: %s", run_id, e)


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


@contextmanager
def settled_on_error(key: str) -> Iterator[None]:
    """Settles batch `key`'s running ledger when the block raises, unless the flow run's own
    hooks will (a `batch_flow`): stream_tasks inside a user's flow, which has no such hooks."""
    try:
        yield
    except BaseException as error:
        from prefect.context import FlowRunContext

        from .batch import live_ledger

        ctx = FlowRunContext.get()
        if ctx is not None and settle_on_exit in (ctx.flow.on_failure_hooks or []):
            raise
        ledger = live_ledger(key, drop=True)
        if ledger is not None:
            try:
                report = ledger.settle()
                log.warning("batch %s stopped (%s); escrow settled: %s", key, type(error).__name__, report.summary())
            except Exception as e:  # the batch's own error is the one to raise
                _log_unsettled(key, type(error).__name__, e)
        raise


def _log_unsettled(key: str, after: str, error: Exception, logger: Any = log) -> None:
    logger.error(
        "could not settle the escrow of batch %s after %s: %s (a run with batch_key=%r settles it)",
        key,
        after,
        error,
        key,
    )


def _lease_to_settle(key: str, flow_run: FlowRun, state: State[Any], log: Any = log) -> Any:
    """The batch's lease, held while a hook settles it; False when another live run holds the
    batch (this run failed waiting for it, or was a duplicate): settling would cancel that run's
    tasks under it. None when the lease cannot be asked (the API is away): the run's own ledger
    is settled anyway. A crashed run's lease may outlive its process briefly: wait for it."""
    from .batch import hold_batch
    from .lease import LEASE_S, BatchKeyConflictError

    lease = hold_batch(key, str(flow_run.id), wait_s=LEASE_S + 5 if state.is_crashed() else 0)
    try:
        return lease.__enter__()
    except BatchKeyConflictError:
        log.warning("batch %s is being run by another flow run: its escrow is that run's to settle", key)
        return False
    except Exception as e:
        log.warning("could not take batch %s's lease to settle it (%s); settling anyway", key, e)
        return None


def settle_on_exit(flow: Flow[Any, Any], flow_run: FlowRun, state: State[Any]) -> None:
    """on_failure / on_crashed / on_cancellation hook of run_batch: settles the batch's escrow
    (cancel NEW tasks, reclaim expired ones where possible) and records where every task's escrow
    stands as the artifact `ogpu-batch-escrow`. In the flow's own process it uses the running
    batch's ledger; elsewhere (the runner of a served deployment) it finds the batch's tasks on
    chain, which needs the network, wallet and storage given as saved block names."""
    from prefect.logging.loggers import flow_run_logger

    from .batch import batch_tasks_on_chain, find_batch, live_ledger
    from .escrow import settle
    from .tasks import make_client

    # The run's own log, wherever the hook runs: a cancelled served run's hooks run in the runner,
    # where a module logger reaches only the runner's stdout.
    log = flow_run_logger(flow_run, flow)
    params = flow_run.parameters or {}
    key = params.get("batch_key") or str(flow_run.id)
    lease = _lease_to_settle(key, flow_run, state, log)
    if lease is False:
        return
    try:
        ledger = live_ledger(key, drop=True)
        if ledger is not None:
            record, report = ledger.record, ledger.settle()
        else:
            found = find_batch(key)
            if found is None:
                return  # it never got as far as publishing
            record = found
            client = make_client(params.get("network"), params.get("wallet"), params.get("storage"))
            tasks, _ = batch_tasks_on_chain(client, record)
            report = settle(client, tasks)
    except Exception as e:  # a hook must not hide the run's own failure
        _log_unsettled(key, state.type.value.lower(), e, log)
        return
    finally:
        if lease is not None:
            lease.__exit__(None, None, None)
    log.warning("batch %s %s; escrow settled: %s", key, state.type.value.lower(), report.summary())
    from .events import emit_batch_event

    emit_batch_event(
        "failed",
        record.chain_id,
        key,
        record.source,
        {
            "state": state.type.value,
            "message": redact(state.message or "")[:500],
            "escrow": report.summary(),
            "open_escrow": len(report.open_escrow),
        },
    )
    from .batch_report import escrow_markdown

    _artifact(flow_run, escrow_markdown(report, key), log)


def _artifact(flow_run: FlowRun, markdown: str, log: Any = log) -> None:
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
