"""`ogpu-prefect vault balance|deposit|withdraw|lock|unbond|claim|cancel-unbonding`: an account's
Vault buckets (liquid balance, lockup, unbonding, escrow, earnings) and the moves between them."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from .context import Context, command, context
from .output import AMOUNT_HELP, amount, emit, money

# action -> (help, takes --amount)
ACTIONS: dict[str, tuple[str, bool]] = {
    "deposit": ("move coin from the wallet into a Vault balance (yours, or --to ADDRESS)", True),
    "withdraw": ("move liquid Vault balance back to the wallet", True),
    "lock": ("stake: liquid balance -> lockup", True),
    "unbond": ("start unbonding stake (claimable after the unbonding period)", True),
    "claim": ("move matured unbonding back to the liquid balance", False),
    "cancel-unbonding": ("put stake that is unbonding back into lockup", False),
}


def register(sub: Any) -> None:
    v = sub.add_parser("vault", help="Vault balances, deposits, withdrawals and stake").add_subparsers(
        dest="action", required=True
    )
    balance = command(v, "balance", _balance, help="balance, lockup, unbonding, escrow, earnings and eligibility")
    balance.add_argument("address", metavar="ADDRESS", nargs="?", help="default: the signer's address")
    for name, (text, takes_amount) in ACTIONS.items():
        p = command(v, name, _move, help=text)
        p.set_defaults(move=name)
        if takes_amount:
            p.add_argument("--amount", type=amount, metavar="AMOUNT", required=True, help=AMOUNT_HELP)
        if name == "deposit":
            p.add_argument("--to", metavar="ADDRESS", help="credit this account's balance (default: your own)")


def vault_state(chain: Any, address: str) -> dict[str, Any]:
    """One account's Vault buckets and the protocol's stake terms, in one batch."""
    v = chain.vault.read
    (balance, lockup, unbonding, matures, frozen, earnings, sanction, eligible, whitelisted, per_source, period) = (
        chain.read_many(
            [
                v.balance_of(address),
                v.lockup_of(address),
                v.unbonding_of(address),
                v.unbonding_timestamp(address),
                v.frozen_payment(address),
                v.total_earnings_of(address),
                v.sanction_of(address),
                v.is_eligible(address),
                v.is_whitelisted(address),
                v.MIN_LOCKUP_PER_SOURCE(),
                v.UNBONDING_PERIOD(),
            ]
        )
    )
    return {
        "address": address,
        "network": chain.network.name,
        "balance": money(balance),
        "lockup": money(lockup),
        "unbonding": money(unbonding),
        "unbonding_matures_at": matures or None,
        "frozen_payment": money(frozen),
        "total_earnings": money(earnings),
        "sanction": money(sanction),
        "eligible": eligible,
        "whitelisted": whitelisted,
        "wallet": money(chain.balance(address)),
        "min_lockup_per_source": money(per_source),
        "unbonding_period_s": period,
    }


def _balance(args: argparse.Namespace) -> int:
    from ..validation import check_address

    ctx = context(args)
    address = check_address("ADDRESS", args.address) if args.address is not None else ctx.address()
    emit(args, vault_state(ctx.chain, address), f"Vault of {address} on {ctx.network.name}")
    return 0


def _precheck(ctx: Context, move: str, value: int, account: str) -> None:
    """What the Vault would refuse, refused first as a typed error naming --amount (no gas spent)."""
    from ..inspect import check_vault_move

    check_vault_move(ctx.chain, move, value, account, field="--amount", show=_show)


def _show(wei: int) -> str:
    m = money(wei)
    return f"{m['ogpu']} OGPU"


def _move(args: argparse.Namespace) -> int:
    from ..validation import check_address

    ctx = context(args)
    chain = ctx.chain
    sender = chain.sender(ctx.signer())
    value = getattr(args, "amount", 0)
    _precheck(ctx, args.move, value, sender.address)
    target = sender.address
    if args.move == "deposit" and args.to is not None:
        target = check_address("--to", args.to)
    calls: dict[str, Callable[[], Any]] = {
        "deposit": lambda: chain.vault.deposit(target, value=value),
        "withdraw": lambda: chain.vault.withdraw(value),
        "lock": lambda: chain.vault.lock(value),
        "unbond": lambda: chain.vault.unbond(value),
        "claim": lambda: chain.vault.claim(),
        "cancel-unbonding": lambda: chain.vault.cancel_unbonding(),
    }
    receipt = sender.transact(calls[args.move]())
    out: dict[str, Any] = {
        "action": args.move,
        "account": target,
        "tx_hash": receipt.tx_hash,
        "gas_used": receipt.gas_used,
    }
    if value:
        out["amount"] = money(value)
    out["vault"] = vault_state(chain, target)
    emit(args, out, f"{args.move}: done")
    return 0
