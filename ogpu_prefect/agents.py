"""Pairing and agents on the Terminal (PROTOCOL.md 5.1), without Prefect.

A master pairs with a provider in two steps (`announce_provider` by the master, payable: the
amount goes to the provider's lockup; then `announce_master` by the provider). A client or a master
names agents (`set_agent`); an agent's own key then signs on its principal's behalf. For a
provider, the contracts accept `Nexus.register`, `unregister`, `attempt` and `submitResponse` from
the provider itself, its master, or an agent of its master (`Terminal.isAgentOf(master, agent)`);
they refuse a provider's own agents (providers cannot name any).

Each call is checked against what the Terminal would refuse first, as an `InvalidInputError`
naming the field (no gas spent). Only the real network's ABI is used.

Example (a chain from `Chain(network)`, keys from wallets):

    announce_provider(chain, master_key, provider_address, amount=10**18)
    announce_master(chain, provider_key, master_address)
    set_agent(chain, master_key, agent_address)        # the agent may now attempt for the provider
    assert acting_role(chain, agent_address, provider_address) == "agent"
"""

from __future__ import annotations

from typing import Any, Literal

from .chain.connection import Chain
from .chain.errors import InvalidInputError
from .chain.tx import Receipt
from .validation import check_address, check_int

ZERO = "0x" + "00" * 20
Role = Literal["provider", "master", "agent"]


class NotAgentError(InvalidInputError):
    """The key may not sign for the provider: it is neither the provider, nor its master, nor an
    agent its master named (or the provider has no master)."""


def _is_zero(address: str) -> bool:
    return int(address, 16) == 0


def is_agent_of(chain: Chain, principal: str, agent: str) -> bool:
    """Whether `agent` may sign for `principal` (a client or a master): `Terminal.isAgentOf`."""
    return chain.terminal.is_agent_of(check_address("principal", principal), check_address("agent", agent))


def master_of(chain: Chain, provider: str) -> str | None:
    """The provider's master once both sides announced (`Terminal.masterOf`), else None."""
    master = chain.terminal.master_of(check_address("provider", provider))
    return None if _is_zero(master) else master


def set_agent(chain: Chain, signer: Any, agent: str, value: bool = True) -> Receipt:
    """Names (`value=True`) or removes (`False`) `agent` as an agent of the signer, a client or a
    master (`Terminal.setAgent`). A provider cannot name agents: refused before any transaction."""
    agent = check_address("agent", agent)
    if not isinstance(value, bool):
        raise InvalidInputError("value", f"expected True (set) or False (unset), not {type(value).__name__}")
    sender = chain.sender(signer)
    if agent.lower() == sender.address.lower():
        raise InvalidInputError("agent", f"{agent} is the signer itself: an account cannot be its own agent")
    if chain.terminal.is_provider(sender.address):
        raise InvalidInputError(
            "wallet", f"{sender.address} is a provider: only clients and masters name agents (its master can)"
        )
    return sender.transact(chain.terminal.set_agent(agent, value))


def announce_provider(chain: Chain, signer: Any, provider: str, amount: int = 0) -> Receipt:
    """The master's half of pairing (`Terminal.announceProvider`, payable): `amount` wei from the
    master's wallet go to the provider's lockup. The provider then calls `announce_master`."""
    provider = check_address("provider", provider)
    amount = check_int("amount", amount, minimum=0, maximum=2**256 - 1)
    sender = chain.sender(signer)
    me = sender.address
    if provider.lower() == me.lower():
        raise InvalidInputError("provider", f"{provider} is the signer itself: a master pairs with another account")
    t = chain.terminal.read
    is_provider, current, provider_master = chain.read_many(
        [t.is_provider(me), t.provider_of(me), t.master_of(provider)]
    )
    if is_provider:
        raise InvalidInputError("wallet", f"{me} is a provider: a provider cannot be a master")
    if not _is_zero(provider_master):
        raise InvalidInputError("provider", f"{provider} is already paired with master {provider_master}")
    if current.lower() == provider.lower():  # a retry after it landed would lock `amount` again
        raise InvalidInputError(
            "provider", f"{me} has announced {provider} already; the provider's announce_master completes the pairing"
        )
    if (
        not _is_zero(current)
        and current.lower() != provider.lower()
        and not _is_zero(chain.terminal.master_of(current))
    ):
        raise InvalidInputError("wallet", f"{me} is already paired with provider {current} (remove_provider first)")
    if amount > chain.balance(me):
        raise InvalidInputError("amount", f"{amount} wei is more than the wallet of {me} holds")
    return sender.transact(chain.terminal.announce_provider(provider, amount, value=amount))


def announce_master(chain: Chain, signer: Any, master: str) -> Receipt:
    """The provider's half of pairing (`Terminal.announceMaster`), after the master's
    `announce_provider` named this provider."""
    master = check_address("master", master)
    sender = chain.sender(signer)
    me = sender.address
    t = chain.terminal.read
    announced, current = chain.read_many([t.provider_of(master), t.master_of(me)])
    if not _is_zero(current):
        raise InvalidInputError("wallet", f"{me} is already paired with master {current}")
    if announced.lower() != me.lower():
        raise InvalidInputError(
            "master", f"{master} has not announced {me} as its provider (the master calls announce_provider first)"
        )
    return sender.transact(chain.terminal.announce_master(master))


def acting_role(chain: Chain, signer: str, provider: str, *, field: str = "provider") -> Role:
    """How `signer` may sign the provider's calls (register, attempt, submitResponse): as the
    `provider` itself, its `master`, or an `agent` of its master. Anything else raises
    NotAgentError naming `field`, in one line that says what the master must do."""
    signer, provider = check_address("wallet", signer), check_address(field, provider)
    if signer.lower() == provider.lower():
        return "provider"
    master = chain.terminal.master_of(provider)
    if _is_zero(master):
        raise NotAgentError(
            field,
            f"provider {provider} has no master (Terminal.masterOf is unset): pair it first "
            "(announce_provider by the master, then announce_master by the provider)",
        )
    if master.lower() == signer.lower():
        return "master"
    if not chain.terminal.is_agent_of(master, signer):
        raise NotAgentError(
            field,
            f"{signer} may not sign for provider {provider}: it is not an agent of its master {master} "
            "(the master names it with set_agent)",
        )
    return "agent"
