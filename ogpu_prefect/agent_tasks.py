"""Prefect tasks for agents and pairing on the Terminal (thin over `ogpu_prefect.agents`): a client
or a master names or removes an agent; a master and a provider pair. Transactions return their
hash; bad input raises `InvalidInputError` naming the field before any transaction.

Example:
    ```python
    from ogpu_prefect.agent_tasks import announce_master, announce_provider, set_agent
    announce_provider(provider_address, network="devnet", wallet="master", amount=10**18)
    announce_master(master_address, network="devnet", wallet="provider")
    set_agent(agent_address, network="devnet", wallet="master")   # the agent may now work for the provider
    ```
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from . import agents
from .blocks import OGPUNetwork, OGPUWallet
from .chain.connection import Chain
from .tasks import BlockOrName, load_block


def _chain(network: BlockOrName) -> Chain:
    return load_block(OGPUNetwork, network, "network").connect()


def _signer(wallet: BlockOrName) -> object:
    return load_block(OGPUWallet, wallet, "wallet").signer()


@task(name="set_agent", cache_policy=NO_CACHE)
def set_agent(agent: str, network: BlockOrName, wallet: BlockOrName, value: bool = True) -> str:
    """Names `agent` as an agent of the wallet (a client or a master); `value=False` removes it
    (`Terminal.setAgent`). Returns the tx hash."""
    chain = _chain(network)
    return agents.set_agent(chain, _signer(wallet), agent, value).tx_hash


@task(name="unset_agent", cache_policy=NO_CACHE)
def unset_agent(agent: str, network: BlockOrName, wallet: BlockOrName) -> str:
    """Removes `agent` as an agent of the wallet (`Terminal.setAgent(agent, false)`). Returns the tx hash."""
    chain = _chain(network)
    return agents.set_agent(chain, _signer(wallet), agent, False).tx_hash


@task(name="is_agent_of", cache_policy=NO_CACHE)
def is_agent_of(principal: str, agent: str, network: BlockOrName) -> bool:
    """Whether `agent` may sign for `principal`, a client or a master (`Terminal.isAgentOf`)."""
    return agents.is_agent_of(_chain(network), principal, agent)


@task(name="acting_role", cache_policy=NO_CACHE)
def acting_role(provider: str, signer: str, network: BlockOrName) -> str:
    """How `signer` (an address) may sign `provider`'s calls: "provider", "master" or "agent";
    `NotAgentError` naming `provider` if it may not."""
    return agents.acting_role(_chain(network), signer, provider)


@task(name="announce_provider", cache_policy=NO_CACHE)
def announce_provider(provider: str, network: BlockOrName, wallet: BlockOrName, amount: int = 0) -> str:
    """The master's half of pairing (`Terminal.announceProvider`): `amount` wei from the wallet go
    to the provider's lockup. Returns the tx hash."""
    chain = _chain(network)
    return agents.announce_provider(chain, _signer(wallet), provider, amount).tx_hash


@task(name="announce_master", cache_policy=NO_CACHE)
def announce_master(master: str, network: BlockOrName, wallet: BlockOrName) -> str:
    """The provider's half of pairing (`Terminal.announceMaster`), after the master's
    `announce_provider`. Returns the tx hash."""
    chain = _chain(network)
    return agents.announce_master(chain, _signer(wallet), master).tx_hash
