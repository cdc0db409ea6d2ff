"""`ogpu-prefect source publish|update|inactivate|show`: a client's sources."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .context import command, context
from .output import AMOUNT_HELP, amount, emit, money, parse_amount, seconds

# SourceSpec field -> the flag that sets it (errors name the flag, or `--spec` for the file's value).
FLAGS = {
    "name": "--name",
    "description": "--description",
    "logo_url": "--logo-url",
    "cpu": "--cpu",
    "nvidia": "--nvidia",
    "amd": "--amd",
    "min_payment": "--min-payment",
    "min_available_lockup": "--min-lockup",
    "max_expiry_duration": "--max-expiry",
    "delivery_method": "--delivery-method",
}
AMOUNT_FIELDS = ("min_payment", "min_available_lockup")
METHODS = {
    "first_response": "FIRST_RESPONSE",
    "manual": "MANUAL_CONFIRMATION",
    "manual_confirmation": "MANUAL_CONFIRMATION",
}


def register(sub: Any) -> None:
    src = sub.add_parser("source", help="publish, update, inactivate or show a source").add_subparsers(
        dest="action", required=True
    )
    publish = command(src, "publish", _publish, help="upload a source's metadata and publish it", storage=True)
    _spec_options(publish)
    update = command(
        src, "update", _update, help="replace a source's terms and metadata (flags not given are kept)", storage=True
    )
    update.add_argument("source", metavar="SOURCE", help="the source's address")
    _spec_options(update)
    inactivate = command(src, "inactivate", _inactivate, help="stop a source from taking tasks (one-way)")
    inactivate.add_argument("source", metavar="SOURCE")
    show = command(src, "show", _show, help="a source's terms, status and counts")
    show.add_argument("source", metavar="SOURCE")
    show.add_argument("--tasks", action="store_true", help="list its tasks' addresses")
    show.add_argument("--registrants", action="store_true", help="list the providers registered to it")


def _spec_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("the source (a JSON --spec file, and flags that override it)")
    g.add_argument(
        "--spec", metavar="FILE", help="JSON: name, description, logo_url, cpu, nvidia, amd, min_payment, ..."
    )
    g.add_argument("--name")
    g.add_argument("--description")
    g.add_argument("--logo-url", metavar="URL")
    for env in ("cpu", "nvidia", "amd"):
        g.add_argument(f"--{env}", metavar="URL", help=f"docker-compose URL (or local file) for {env} providers")
    g.add_argument("--min-payment", type=amount, metavar="AMOUNT", help=f"least payment per task: {AMOUNT_HELP}")
    g.add_argument("--min-lockup", type=amount, metavar="AMOUNT", help="least stake a provider must hold to register")
    g.add_argument("--max-expiry", type=seconds, metavar="SECONDS", help="longest task lifetime (default 3600)")
    g.add_argument("--delivery-method", metavar="METHOD", help="first_response (default: paid on submission) or manual")


def _read_spec(path: str) -> dict[str, Any]:
    from ..chain.errors import InvalidInputError
    from ..validation import check_name

    try:
        data = json.loads(Path(check_name("--spec", path)).read_text())
    except OSError as e:
        raise InvalidInputError("--spec", f"cannot read {path}: {e.strerror}") from None
    except ValueError as e:
        raise InvalidInputError("--spec", f"{path} is not JSON ({e.msg}, line {e.lineno})") from None
    if not isinstance(data, dict):
        raise InvalidInputError("--spec", f"{path} holds a JSON {type(data).__name__}, not an object")
    return data


def _compose_url(value: str) -> str:
    """A local compose file given as a path becomes a file:// URL (for providers on this machine)."""
    if value and "://" not in value and Path(value).is_file():
        return f"file://{Path(value).resolve()}"
    return value


def build_spec(args: argparse.Namespace, base: dict[str, Any] | None = None) -> Any:
    """A SourceSpec from `base` (an update's current terms), the --spec file, then the flags.
    Errors name the flag, or `--spec.<field>` for a value from the file."""
    from ..chain.errors import InvalidInputError
    from ..models import SourceSpec
    from ..validation import parse_model

    data: dict[str, Any] = dict(base or {})
    origin = {k: "the source's current value" for k in data}
    if args.spec:
        spec = _read_spec(args.spec)
        data.update(spec)
        origin.update({k: f"--spec.{k}" for k in spec})
    for key, flag in FLAGS.items():
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None:
            data[key], origin[key] = value, flag
    for key in AMOUNT_FIELDS:  # "0.01 OGPU" in a spec file too
        if isinstance(data.get(key), str):
            try:
                data[key] = parse_amount(data[key])
            except ValueError as e:
                raise InvalidInputError(origin[key], str(e)) from None
    for env in ("cpu", "nvidia", "amd"):
        if isinstance(data.get(env), str):
            data[env] = _compose_url(data[env])
    method = data.get("delivery_method")
    if isinstance(method, str):
        data["delivery_method"] = METHODS.get(method.lower(), method)
    if "name" not in data:
        raise InvalidInputError("--name", "a source needs a name (--name, or name in --spec)")
    try:
        spec = parse_model(SourceSpec, data, "spec")
    except InvalidInputError as e:
        key = e.field.removeprefix("spec.").split(".")[0]
        message = str(e).partition(": ")[2].removeprefix("Value error, ").removeprefix(f"{key}: ")
        raise type(e)(origin.get(key, FLAGS.get(key, e.field)), message) from None
    if not spec.environments:
        raise InvalidInputError("--cpu", "a source needs at least one compose URL (--cpu, --nvidia or --amd)")
    return spec


def source_json(snap: Any) -> dict[str, Any]:
    out = snap.to_json()
    for key in ("min_payment", "min_available_lockup"):
        out[key] = money(out[key])
    return out


def _publish(args: argparse.Namespace) -> int:
    from ..inspect import snapshot_source

    ctx = context(args)
    spec = build_spec(args)
    client = ctx.client(storage=True)
    address = client.publish_source(spec)
    emit(args, source_json(snapshot_source(client.chain, address)), f"published source {address}")
    return 0


def _update(args: argparse.Namespace) -> int:
    from ..inspect import snapshot_source
    from ..storage import StorageError, fetch_json

    ctx = context(args)
    client = ctx.client(storage=True)
    current = snapshot_source(client.chain, args.source, field="SOURCE")
    base: dict[str, Any] = {
        "min_payment": current.min_payment,
        "min_available_lockup": current.min_available_lockup,
        "max_expiry_duration": current.max_expiry_duration,
        "delivery_method": current.delivery_method.name,
    }
    try:  # the metadata the source points at, read only from the storage's own origins
        meta = fetch_json(current.metadata_url, allowed_origins=ctx.store()[1])
    except StorageError:
        meta = None
    if isinstance(meta, dict):
        base.update({k: meta.get(k, "") for k in ("name", "description", "cpu", "nvidia", "amd")})
        base["logo_url"] = meta.get("logoUrl", "")
    spec = build_spec(args, base)
    receipt = client.update_source(current.address, spec)
    out = {"tx_hash": receipt.tx_hash, **source_json(snapshot_source(client.chain, current.address))}
    emit(args, out, f"updated source {current.address}")
    return 0


def _inactivate(args: argparse.Namespace) -> int:
    from ..inspect import snapshot_source

    client = context(args).client()
    address = snapshot_source(client.chain, args.source, field="SOURCE").address
    receipt = client.inactivate_source(address)
    snap = snapshot_source(client.chain, address)
    emit(args, {"source": snap.address, "status": snap.status.name, "tx_hash": receipt.tx_hash}, "inactivated")
    return 0


def _show(args: argparse.Namespace) -> int:
    from ..inspect import snapshot_source, source_registrants, source_tasks

    chain = context(args).chain
    snap = snapshot_source(chain, args.source, field="SOURCE")
    out = source_json(snap)
    if args.tasks:
        out["tasks"] = source_tasks(chain, snap.address)
    if args.registrants:
        out["registrants"] = source_registrants(chain, snap.address)
    emit(args, out, f"source {snap.address} on {chain.network.name}")
    return 0
