"""Prefect tasks for the Vault: deposit and withdraw, lock stake, unbond, claim and cancel an
unbonding, and an account's balances. Each move returns the transaction's hash; amounts are exact
ints of wei, checked first, and an amount above what its bucket holds (the wallet for a deposit,
the liquid balance for a withdrawal or a lock, the lockup for an unbonding) is refused with an
`InvalidInputError` naming `amount` before any transaction. What the Vault refuses otherwise (a
claim before the unbonding period passed) raises its typed error from the gas estimate, before
anything is sent.

Example:
    ```python
    from ogpu_prefect.vault import deposit_to_vault, lock_stake
    deposit_to_vault(10**18, network="devnet", wallet="client")
    lock_stake(5 * 10**18, network="devnet", wallet="provider")
    ```
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefect import Task, task
from prefect.cache_policies import NO_CACHE

from .blocks import OGPUNetwork
from .chain.contracts import Vault
from .chain.tx import Call
from .client import OGPUClient
from .inspect import VaultSnapshot, check_vault_move, snapshot_vault
from .tasks import BlockOrName, load_block, make_client
from .validation import check_address, check_int


def _send(
    network: BlockOrName, wallet: BlockOrName, build: Callable[[OGPUClient], Call], move: str = "", amount: int = 0
) -> str:
    client = make_client(network, wallet)
    check_vault_move(client.chain, move, amount, client.address)
    return str(client.sender.transact(build(client)).tx_hash)


def _amount(value: Any) -> int:
    return check_int("amount", value, minimum=1, maximum=2**256 - 1)


@task(name="deposit_to_vault", cache_policy=NO_CACHE)
def deposit_to_vault(amount: int, network: BlockOrName, wallet: BlockOrName, account: str | None = None) -> str:
    """Deposits `amount` wei into the Vault balance of `account` (default: the wallet's own)."""
    value = _amount(amount)
    target = check_address("account", account) if account is not None else None
    return _send(network, wallet, lambda c: c.chain.vault.deposit(target or c.address, value=value), "deposit", value)


@task(name="vault_balances", cache_policy=NO_CACHE)
def vault_balances(account: str, network: BlockOrName) -> VaultSnapshot:
    """`account`'s Vault in wei: liquid balance, lockup, unbonding (and when it matures), escrow
    (`frozen_payment`), earnings, sanction, eligibility; and its wallet's balance."""
    account = check_address("account", account)
    return snapshot_vault(load_block(OGPUNetwork, network, "network").connect(), account)


DOCS = {
    "withdraw_from_vault": "Withdraws `amount` wei of the wallet's liquid Vault balance to the wallet.",
    "lock_stake": "Moves `amount` wei of the wallet's Vault balance into lockup (stake).",
    "unbond_stake": "Starts unbonding `amount` wei of lockup (claimable after the unbonding period).",
    "claim_unbonded": "Moves stake whose unbonding period has passed back to the liquid balance (`Vault.claim`).",
    "cancel_unbonding": "Puts stake that is unbonding back into lockup (`Vault.cancelUnbonding`).",
}


def _amount_task(name: str, move: str, call: Callable[[Vault, int], Call]) -> Task[..., str]:
    def run(amount: int, network: BlockOrName, wallet: BlockOrName) -> str:
        value = _amount(amount)
        return _send(network, wallet, lambda c: call(c.chain.vault, value), move, value)

    run.__name__ = run.__qualname__ = name
    run.__doc__ = DOCS[name]
    return task(name=name, cache_policy=NO_CACHE)(run)


def _plain_task(name: str, call: Callable[[Vault], Call]) -> Task[..., str]:
    def run(network: BlockOrName, wallet: BlockOrName) -> str:
        return _send(network, wallet, lambda c: call(c.chain.vault))

    run.__name__ = run.__qualname__ = name
    run.__doc__ = DOCS[name]
    return task(name=name, cache_policy=NO_CACHE)(run)


withdraw_from_vault = _amount_task("withdraw_from_vault", "withdraw", lambda vault, amount: vault.withdraw(amount))
lock_stake = _amount_task("lock_stake", "lock", lambda vault, amount: vault.lock(amount))
unbond_stake = _amount_task("unbond_stake", "unbond", lambda vault, amount: vault.unbond(amount))
claim_unbonded = _plain_task("claim_unbonded", lambda vault: vault.claim())
cancel_unbonding = _plain_task("cancel_unbonding", lambda vault: vault.cancel_unbonding())
