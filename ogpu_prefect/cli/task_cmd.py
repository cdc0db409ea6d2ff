"""`ogpu-prefect task publish|show|responses|confirm|cancel`: a client's tasks."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from .context import command, context
from .output import AMOUNT_HELP, Progress, amount, emit, money, note, seconds

CHUNK = 100
"""Inputs published per `publish_tasks` call: the progress bar moves once per chunk."""
POLL_S = 0.5


def register(sub: Any) -> None:
    tsk = sub.add_parser("task", help="publish, show, list responses of, confirm or cancel tasks").add_subparsers(
        dest="action", required=True
    )
    publish = command(
        tsk,
        "publish",
        _publish,
        help="publish one task (--data) or one per line of a JSON-lines file (--inputs)",
        storage=True,
    )
    publish.add_argument("source", metavar="SOURCE")
    what = publish.add_mutually_exclusive_group()
    what.add_argument("--data", metavar="JSON", help="one task's input, as JSON")
    what.add_argument("--inputs", metavar="FILE", help="JSON lines: one task per line")
    publish.add_argument("--function", metavar="NAME", help="the source's handler for inputs that do not name one")
    publish.add_argument(
        "--payment", type=amount, metavar="AMOUNT", help=f"per task (default: the source's minimum); {AMOUNT_HELP}"
    )
    publish.add_argument(
        "--ttl", type=seconds, metavar="SECONDS", help="lifetime (default 600, or the source's maximum)"
    )
    publish.add_argument("--wait", action="store_true", help="wait until every task is answered, finished or expired")
    publish.add_argument("--timeout", type=seconds, metavar="SECONDS", help="with --wait: stop waiting after this")
    publish.add_argument(
        "--dry-run",
        action="store_true",
        help="publish nothing: print the escrow, gas at the current fee, Vault balance and the source's providers",
    )
    publish.add_argument(
        "--require-providers", action="store_true", help="refuse (exit 2) when nobody is registered to the source"
    )
    show = command(tsk, "show", _show, help="a task's status, terms and attempts")
    show.add_argument("task", metavar="TASK")
    responses = command(tsk, "responses", _responses, help="the responses submitted for a task", storage=True)
    responses.add_argument("task", metavar="TASK")
    responses.add_argument("--fetch", action="store_true", help="read each response's payload (trusted origins only)")
    responses.add_argument(
        "--trust",
        metavar="URL",
        action="append",
        default=[],
        help="with --fetch: also read payloads under this URL prefix (repeatable; default: the storage's own)",
    )
    confirm = command(tsk, "confirm", _confirm, help="confirm a response: the task is finalized and its provider paid")
    confirm.add_argument("response", metavar="RESPONSE")
    cancel = command(tsk, "cancel", _cancel, help="cancel tasks nobody attempted yet: their escrow returns")
    cancel.add_argument("tasks", metavar="TASK", nargs="+")


def _renamed(e: Any, names: dict[str, str]) -> Any:
    """The same typed error, naming the command's option instead of the library's field
    (`inputs[3].data` -> `--inputs line 4.data`)."""
    for old, new in names.items():
        if e.field == old or e.field.startswith((old + ".", old + "[")):
            return type(e)(new + e.field[len(old) :], str(e).partition(": ")[2])
    return e


def read_inputs(args: argparse.Namespace) -> tuple[list[Any], list[str]]:
    """(inputs, the option naming each) from --data or --inputs; typed errors name the option
    (and the line) and never echo a key."""
    from ..chain.errors import InvalidInputError
    from ..models import coerce_inputs
    from ..validation import check_name

    if args.data is not None:
        try:
            raw, where = [json.loads(args.data)], ["--data"]
        except ValueError:
            raise InvalidInputError("--data", "not JSON") from None  # the text is not echoed: it may hold a key
    elif args.inputs is not None:
        path = Path(check_name("--inputs", args.inputs))
        try:
            lines = path.read_text().splitlines()
        except OSError as e:
            raise InvalidInputError("--inputs", f"cannot read {path}: {e.strerror}") from None
        raw, where = [], []
        for n, line in enumerate(lines, 1):
            if line.strip():
                try:
                    raw.append(json.loads(line))
                except ValueError:
                    raise InvalidInputError(f"--inputs line {n}", "not JSON") from None
                where.append(f"--inputs line {n}")
        if not raw:
            raise InvalidInputError("--inputs", f"{path} holds no inputs")
    else:
        raise InvalidInputError("--data", "give one input (--data JSON) or a JSON-lines file (--inputs FILE)")
    if args.function is None:
        for x, w in zip(raw, where):
            if not (isinstance(x, dict) and "function_name" in x):
                raise InvalidInputError(
                    w, 'names no function: give --function NAME, or {"function_name": ..., "data": ...}'
                )
    try:
        return coerce_inputs(raw, args.function), where
    except InvalidInputError as e:
        index = e.field.removeprefix("inputs[").partition("]")[0]
        raise _renamed(e, {e.field: where[int(index)]} if index.isdigit() else {}) from None


def _publish(args: argparse.Namespace) -> int:
    from ..batch_estimate import check_served, estimate_batch
    from ..chain.errors import BalanceTooLowError, EscrowHeldError, InvalidInputError
    from ..validation import check_address

    inputs, where = read_inputs(args)
    ctx = context(args)
    client = ctx.client(storage=True)
    names = {"payment": "--payment", "expiry_time": "--ttl", "source": "SOURCE"}
    try:
        terms = client.source_terms(check_address("SOURCE", args.source))
    except InvalidInputError as e:
        raise _renamed(e, names) from None
    payment = terms.min_payment if args.payment is None else args.payment
    ttl = args.ttl if args.ttl is not None else min(600, terms.max_expiry_duration)
    expiry = client.chain.now() + ttl
    names.update({f"inputs[{i}]": w for i, w in enumerate(where)})
    names["require_providers"] = "--require-providers"
    try:  # the whole batch (terms, balance, every input) is checked before the first chunk is sent
        providers = check_served(client.chain, terms.address, require=args.require_providers, warn=note)
        try:
            client.check_batch(terms, len(inputs), payment, expiry)
        except BalanceTooLowError:
            if not args.dry_run:  # a dry run reports the balance
                raise
        client.config_bodies(inputs, [{} for _ in inputs], range(len(inputs)))
    except InvalidInputError as e:
        raise _renamed(e, names) from None
    if args.dry_run:
        estimate = estimate_batch(client, terms.address, len(inputs), payment, expiry, providers=providers)
        emit(args, estimate_json(estimate), f"dry run: {len(inputs)} task(s) on {terms.address}, nothing published")
        return 0
    published: list[Any] = []
    with Progress(len(inputs), "publishing") as bar:
        for start in range(0, len(inputs), CHUNK):
            chunk = inputs[start : start + CHUNK]
            try:
                published += client.publish_tasks(
                    terms.address, chunk, payment, expiry, indexes=list(range(start, start + len(chunk)))
                )
            except InvalidInputError as e:
                if published:
                    raise _partial(published, len(inputs), e) from e
                raise _renamed(e, names) from None
            except Exception as e:
                if published or isinstance(e, EscrowHeldError):
                    raise _partial(published + list(getattr(e, "tasks", [])), len(inputs), e) from e
                raise
            bar.update(len(published))
    out: dict[str, Any] = {
        "source": terms.address,
        "count": len(published),
        "payment": money(payment),
        "total": money(payment * len(published)),
        "expiry_time": expiry,
        "tasks": [{"index": p.index, "address": p.address, "config_url": p.config_url} for p in published],
    }
    if args.wait:
        out["results"] = wait_for(ctx.chain, [p.address for p in published], args.timeout)
    emit(args, out, f"published {len(published)} task(s) on {terms.address}")
    return 0


def estimate_json(estimate: Any) -> dict[str, Any]:
    """A BatchEstimate as the CLI prints it: amounts in both units."""
    out = estimate.model_dump()
    for k in ("payment", "escrow", "budget", "gas_cost", "balance", "wallet", "fee_per_gas"):
        if out[k] is not None:
            out[k] = money(out[k])
    return out


def _partial(published: list[Any], total: int, cause: Exception) -> Exception:
    from ..chain.errors import EscrowHeldError

    landed = [getattr(p, "address", str(p)) for p in published]
    span = f" ({landed[0]} .. {landed[-1]})" if landed else ""
    return EscrowHeldError(
        f"stopped after publishing {len(landed)} of {total} task(s){span}: {cause}; "
        f"`ogpu-prefect source show SOURCE --tasks` lists them, `task cancel` returns their escrow",
        published,
    )


def wait_for(chain: Any, tasks: list[str], timeout: int | None) -> list[dict[str, Any]]:
    """Polls until each task is answered (RESPONDED: a manual source's client confirms next),
    finished, or past its expiry; or `timeout` seconds pass. -> one status row per task."""
    from ..chain.types import TaskStatus
    from ..inspect import snapshot_tasks

    settled = {TaskStatus.RESPONDED, TaskStatus.FINALIZED, TaskStatus.CANCELED, TaskStatus.EXPIRED}
    deadline = time.monotonic() + timeout if timeout else None
    rows: dict[str, dict[str, Any]] = {}
    open_ = list(tasks)
    with Progress(len(tasks), "waiting") as bar:
        while open_:
            now = chain.now()
            for snap in snapshot_tasks(chain, open_):
                expired = snap.status not in settled and now > snap.expiry_time
                if snap.status in settled or expired:
                    rows[snap.address] = {
                        "task": snap.address,
                        "status": "EXPIRED" if expired else snap.status.name,
                        "winning_provider": snap.winning_provider,
                    }
            open_ = [t for t in open_ if t not in rows]
            bar.update(len(rows))
            if not open_ or (deadline is not None and time.monotonic() > deadline):
                break
            time.sleep(POLL_S)
    for t in open_:
        rows[t] = {"task": t, "status": "WAITING", "winning_provider": None}
    return [rows[t] for t in tasks]


def task_json(chain: Any, snap: Any) -> dict[str, Any]:
    out = snap.to_json()
    out["payment"] = money(snap.payment)
    out["expired"] = not snap.status.is_final and chain.now() > snap.expiry_time
    return out


def _show(args: argparse.Namespace) -> int:
    from ..inspect import snapshot_task

    chain = context(args).chain
    snap = snapshot_task(chain, args.task, field="TASK")
    emit(args, task_json(chain, snap), f"task {snap.address} on {chain.network.name}")
    return 0


def _responses(args: argparse.Namespace) -> int:
    from ..inspect import get_task_responses
    from ..storage import StorageError, fetch_json
    from ..validation import check_address, check_url

    ctx = context(args)
    task = check_address("TASK", args.task)
    responses = get_task_responses(ctx.chain, task)
    origins = [*ctx.store()[1], *(check_url("--trust", u) for u in args.trust)] if args.fetch else []
    rows = []
    for r in responses:
        row = {**r.to_json(), "payment": money(r.payment)}
        if args.fetch:
            try:
                row["payload"] = fetch_json(r.data_url, allowed_origins=origins)
            except StorageError as e:  # one unreadable payload does not hide the others
                row["payload_error"] = str(e)
        rows.append(row)
    emit(args, {"task": task, "count": len(rows), "responses": rows}, f"{len(rows)} response(s) to {task}")
    return 0


def _confirm(args: argparse.Namespace) -> int:
    from ..inspect import snapshot_response, snapshot_task

    client = context(args).client()
    response = snapshot_response(client.chain, args.response, field="RESPONSE")
    receipt = client.confirm_responses([response.address])[0]
    task = snapshot_task(client.chain, response.task)
    out = {
        "response": response.address,
        "task": task.address,
        "task_status": task.status.name,
        "provider": response.provider,
        "payment": money(response.payment),
        "tx_hash": receipt.tx_hash,
        "gas_used": receipt.gas_used,
    }
    emit(args, out, f"confirmed {response.address}")
    return 0


def _cancel(args: argparse.Namespace) -> int:
    from ..inspect import snapshot_tasks
    from ..validation import check_address

    client = context(args).client()
    tasks = [check_address(f"TASK[{i}]" if len(args.tasks) > 1 else "TASK", t) for i, t in enumerate(args.tasks)]
    before = snapshot_tasks(client.chain, tasks)
    receipts = client.cancel_tasks(tasks)
    after = snapshot_tasks(client.chain, tasks)
    rows = [
        {"task": s.address, "status": s.status.name, "refund": money(b.payment), "tx_hash": r.tx_hash}
        for b, s, r in zip(before, after, receipts)
    ]
    out = {"canceled": rows, "refunded": money(sum(b.payment for b in before))}
    emit(args, out, f"canceled {len(rows)} task(s)")
    return 0
