"""`ogpu-prefect provider register|unregister|status`: a provider's stake and registrations (what
the `ogpu-provider` worker does on start, without a worker or a hardware backend)."""

from __future__ import annotations

import argparse
from typing import Any

from .context import command, context
from .output import AMOUNT_HELP, amount, emit, money
from .vault_cmd import vault_state

ENVIRONMENTS = ("cpu", "nvidia", "amd")


def register(sub: Any) -> None:
    prov = sub.add_parser("provider", help="a provider's stake and registrations").add_subparsers(
        dest="action", required=True
    )
    reg = command(
        prov, "register", _register, help="lock enough stake and register to sources (idempotent)", role="provider1"
    )
    reg.add_argument("sources", metavar="SOURCE", nargs="+")
    reg.add_argument("--environment", choices=ENVIRONMENTS, default="cpu", help="the hardware offered (default cpu)")
    reg.add_argument("--stake", type=amount, metavar="AMOUNT", help=f"lock at least this much in all; {AMOUNT_HELP}")
    unreg = command(
        prov,
        "unregister",
        _unregister,
        help="leave sources (idempotent); --unbond starts taking stake back (claim after the unbonding period)",
        role="provider1",
    )
    unreg.add_argument("sources", metavar="SOURCE", nargs="+")
    unreg.add_argument(
        "--provider", metavar="ADDRESS", help="the provider to take off (default: the signer; a master or its agent)"
    )
    unreg.add_argument(
        "--unbond", type=amount, metavar="AMOUNT", help=f"then move this much lockup to unbonding; {AMOUNT_HELP}"
    )
    status = command(prov, "status", _status, help="a provider's stake, earnings and registrations", role="provider1")
    status.add_argument("address", metavar="ADDRESS", nargs="?", help="default: the signer's address")
    status.add_argument("--source", dest="sources", metavar="SOURCE", action="append", default=[], help="repeatable")


def registrations(chain: Any, provider: str, sources: list[str]) -> list[dict[str, Any]]:
    """Whether `provider` is registered to each source, and with which environment."""
    from ..chain.types import Environment

    reads: list[Any] = []
    for s in sources:
        src = chain.source(s).read
        reads += [src.get_registrant_id(provider), src.preferred_environment_of(provider)]
    values = chain.read_many(reads)
    rows = []
    for i, s in enumerate(sources):
        rid, env = values[2 * i], values[2 * i + 1]
        name = Environment(env).name.lower() if rid and env in (1, 2, 4) else None
        rows.append({"source": s, "registered": bool(rid), "registrant_id": rid, "environment": name})
    return rows


def _register(args: argparse.Namespace) -> int:
    from ..chain.errors import InvalidInputError
    from ..chain.types import Environment
    from ..inspect import snapshot_sources

    ctx = context(args)
    chain = ctx.chain
    sender = chain.sender(ctx.signer())
    me = sender.address
    env = Environment.parse(args.environment)
    snaps = snapshot_sources(chain, args.sources, field="SOURCE")
    for i, snap in enumerate(snaps):
        if not env & snap.environments:
            offered = ", ".join(e.name.lower() for e in Environment if e in snap.environments)
            raise InvalidInputError("--environment", f"SOURCE[{i}] {snap.address} offers {offered} only")
        if snap.status.name != "ACTIVE":
            raise InvalidInputError(f"SOURCE[{i}]", f"{snap.address} is inactive")
    # The lockup the Nexus asks: the protocol's per-source floor for each source, and at least
    # each source's own minimum (Provider.ensure_standing's rule), or --stake if higher.
    vault = chain.vault
    per_source, locked, free = chain.read_many(
        [vault.read.MIN_LOCKUP_PER_SOURCE(), vault.read.lockup_of(me), vault.read.balance_of(me)]
    )
    need = max([per_source * len(snaps), *(s.min_available_lockup for s in snaps), args.stake or 0])
    steps: list[dict[str, Any]] = []
    if locked < need:
        short = need - locked
        if free < short:
            top_up = short - free
            if chain.balance(me) < top_up:
                raise InvalidInputError(
                    "--stake", f"{me} needs {money(top_up)['ogpu']} OGPU more than its wallet and Vault hold"
                )
            r = sender.transact(vault.deposit(me, value=top_up))
            steps.append({"step": "deposit", "amount": money(top_up), "tx_hash": r.tx_hash})
        r = sender.transact(vault.lock(short))
        steps.append({"step": "lock", "amount": money(short), "tx_hash": r.tx_hash})
    current = registrations(chain, me, [s.address for s in snaps])
    todo = [row["source"] for row in current if not row["registered"] or row["environment"] != args.environment]
    if todo:
        calls = [chain.nexus.register(s, me, int(env)) for s in todo]
        for s, r in zip(todo, sender.wait(sender.send(calls))):
            steps.append({"step": "register", "source": s, "tx_hash": r.tx_hash})
    out = {
        "provider": me,
        "environment": args.environment,
        "registered": todo,
        "already_registered": [row["source"] for row in current if row["source"] not in todo],
        "lockup": money(vault.lockup_of(me)),
        "transactions": steps,
    }
    emit(args, out, f"provider {me}: registered to {len(todo)} source(s), {len(out['already_registered'])} already")
    return 0


def _unregister(args: argparse.Namespace) -> int:
    from ..inspect import check_vault_move, snapshot_sources
    from ..standing import leave_sources
    from ..validation import check_address

    ctx = context(args)
    chain = ctx.chain
    sender = chain.sender(ctx.signer())
    me = check_address("--provider", args.provider) if args.provider is not None else sender.address
    if args.unbond is not None and me.lower() != sender.address.lower():
        from ..chain.errors import InvalidInputError

        raise InvalidInputError("--unbond", f"only {me}'s own key moves its stake (the signer is {sender.address})")
    snaps = snapshot_sources(chain, args.sources, field="SOURCE")
    sources = [s.address for s in snaps]
    if args.unbond is not None:  # refused before any transaction, not after the unregistering
        check_vault_move(chain, "unbond", args.unbond, me, field="--unbond", show=lambda w: f"{money(w)['ogpu']} OGPU")
    left = leave_sources(chain, sender, me, sources)
    steps: list[dict[str, Any]] = [{"step": "unregister", "source": s, "tx_hash": r.tx_hash} for s, r in left.items()]
    if args.unbond is not None:
        r = sender.transact(chain.vault.unbond(args.unbond))
        steps.append({"step": "unbond", "amount": money(args.unbond), "tx_hash": r.tx_hash})
    state = vault_state(chain, me)
    out = {
        "provider": me,
        "unregistered": list(left),
        "not_registered": [s for s in sources if s not in left],
        "registrations": registrations(chain, me, sources),
        "lockup": state["lockup"],
        "unbonding": state["unbonding"],
        "unbonding_matures_at": state["unbonding_matures_at"],
        "transactions": steps,
    }
    emit(args, out, f"provider {me}: left {len(left)} source(s), {len(out['not_registered'])} not registered")
    return 0


def _status(args: argparse.Namespace) -> int:
    from ..inspect import snapshot_sources
    from ..validation import check_address

    ctx = context(args)
    chain = ctx.chain
    address = check_address("ADDRESS", args.address) if args.address is not None else ctx.address()
    sources = [s.address for s in snapshot_sources(chain, args.sources, field="--source")]
    t = chain.terminal.read
    is_provider, master = chain.read_many([t.is_provider(address), t.master_of(address)])
    state = vault_state(chain, address)
    out = {
        "address": address,
        "network": chain.network.name,
        "is_provider": is_provider,
        "master": None if int(master, 16) == 0 else master,
        "lockup": state["lockup"],
        "unbonding": state["unbonding"],
        "total_earnings": state["total_earnings"],
        "balance": state["balance"],
        "eligible": state["eligible"],
        "sanction": state["sanction"],
        "registrations": registrations(chain, address, sources),
    }
    emit(args, out, f"provider {address} on {chain.network.name}")
    return 0
