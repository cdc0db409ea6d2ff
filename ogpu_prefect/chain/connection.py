"""A live connection to one Network: typed contract wrappers, senders, batched reads, events."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

from ._contract import BlockId, Read, block_param
from .contracts import Controller, Manager, Nexus, Response, Source, Task, Terminal, Vault
from .errors import InvalidInputError
from .logs import EventCursor
from .mining import mines_on_demand
from .network import Network
from .rpc import Rpc, Web3Rpc
from .signing import as_signer
from .tx import TxSender

READ_BATCH = 500
"""Views per JSON-RPC batch in `read_many`."""


class Chain:
    """Everything bound to one network. Cheap wrappers are created on demand; no global state.

    `Chain(network)` talks JSON-RPC over its own HTTP session; `Chain(network, web3=w3)` sends
    through an existing `Web3` instance's provider instead (its endpoint, headers, session).
    Every call is paced under the network's `rate_limit` (chain/pacing.py)."""

    def __init__(self, network: Network, *, web3: Any = None, **rpc_options: Any) -> None:
        self.network = network
        rpc_options.setdefault("rate_limit", network.rate_limit)
        self.rpc: Rpc = Web3Rpc(web3, **rpc_options) if web3 is not None else Rpc(network.rpc_url, **rpc_options)
        self.nexus = Nexus(self.rpc, network.nexus)
        self.controller = Controller(self.rpc, network.controller)
        self.terminal = Terminal(self.rpc, network.terminal)
        self.vault = Vault(self.rpc, network.vault)
        self.manager = Manager(self.rpc, network.manager) if network.manager else None
        self._extensions: bool | None = None
        self._on_demand: bool | None = None
        self._chain_id_checked = False

    def __repr__(self) -> str:
        return f"Chain({self.network.name} @ {self.rpc.label})"

    def source(self, address: str) -> Source:
        return Source(self.rpc, address)

    def task(self, address: str) -> Task:
        return Task(self.rpc, address)

    def response(self, address: str) -> Response:
        return Response(self.rpc, address)

    def sender(self, signer: Any, **options: Any) -> TxSender:
        """A TxSender for `signer`: a private key (hex, bytes, SecretStr), an eth_account
        `LocalAccount` or any object with `address` and `sign_transaction`, or a TxSigner.
        Refused (InvalidInputError naming `chain_id`) when the RPC serves another chain: every
        transaction signed for it would be rejected."""
        if not self._chain_id_checked:
            served = int(self.rpc.call("eth_chainId"), 16)
            if served != self.network.chain_id:
                raise InvalidInputError(
                    "chain_id", f"{self.rpc.label} serves chain {served}, not {self.network.chain_id}"
                )
            self._chain_id_checked = True
        return TxSender(self.rpc, as_signer(signer), self.network.chain_id, **options)

    def block_number(self) -> int:
        return int(self.rpc.call("eth_blockNumber"), 16)

    def timestamp(self, block: BlockId = "latest") -> int:
        return int(self.rpc.call("eth_getBlockByNumber", [block_param(block), False])["timestamp"], 16)

    def now(self) -> int:
        """The timestamp the next block will carry (the "pending" block): what the contracts'
        `block.timestamp` checks will see. Unlike the latest block's, it advances while the chain
        is idle (anvil mines only on demand)."""
        return self.timestamp("pending")

    def mines_on_demand(self) -> bool:
        """Whether a block follows each transaction (anvil's automine): then polling fast pays;
        on a chain with block times it only spends calls. Asked once."""
        if self._on_demand is None:
            self._on_demand = mines_on_demand(self.rpc)
        return self._on_demand

    def balance(self, address: str) -> int:
        return int(self.rpc.call("eth_getBalance", [address, "latest"]), 16)

    def read_many(self, reads: Sequence[Read[Any]], block: BlockId = "latest") -> list[Any]:
        """Batched views, decoded in order (`[task.read.get_status(), vault.read.balance_of(a)]`).
        A reverting view raises its typed error."""
        out: list[Any] = []
        for start in range(0, len(reads), READ_BATCH):  # a reply is held whole: bound it
            part = reads[start : start + READ_BATCH]
            replies = self.rpc.batch([r.request(block) for r in part])
            out += [r.decode(raw) for r, raw in zip(part, replies)]
        return out

    def cursor(self, names: Iterable[str], from_block: int) -> EventCursor:
        """An EventCursor over the Nexus's lifecycle events `names`, from `from_block`."""
        return EventCursor(self.rpc, self.network.nexus, names, from_block)

    def has_extensions(self) -> bool:
        """Whether this deployment has our devnet's extensions (`Controller.reclaimExpired`, ...).
        The real network's contracts do not: callers take the real-network path unless this is
        True. Asked once, through a view only the devnet's Controller has."""
        if self._extensions is None:
            try:
                implementation = Read(self.controller, "taskImplementation").call()
                self._extensions = int(implementation, 16) != 0 if isinstance(implementation, str) else False
            except Exception:  # refused, reverted, or not there: the real network's path
                self._extensions = False
        return self._extensions


class ChainClock:
    """The chain's next-block time (what `block.timestamp` checks see) without an RPC per question:
    read again when a poller saw a new block (`head`) or `resync_s` passed, and in between the last
    reading plus the time elapsed here (the pending block's time follows the wall clock; anvil's
    can be moved, hence the resync). A poller on a metered endpoint saves one call a poll."""

    def __init__(self, chain: Chain, resync_s: float = 1.0) -> None:
        self.chain, self.resync_s = chain, resync_s
        self._head: int | None = None
        self._value, self._at = 0.0, float("-inf")

    def now(self, head: int | None = None) -> float:
        """The next-block time; `head`: the latest block number the caller's poll saw, if any."""
        if time.monotonic() - self._at >= self.resync_s or (head is not None and head != self._head):
            self.set(self.chain.now(), head)
        return self._value + (time.monotonic() - self._at)

    def set(self, chain_now: float, head: int | None = None) -> None:
        """Records the chain's time read just now (by a caller that batched the read)."""
        self._value, self._at, self._head = float(chain_now), time.monotonic(), head
