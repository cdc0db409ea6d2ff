"""A live connection to one Network: typed contract wrappers, senders, batched reads."""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from .contracts import Controller, Manager, Nexus, Response, Source, Task, Terminal, Vault
from .errors import RpcError, revert_error
from .network import Network
from .rpc import Rpc
from .tx import Signer, TxSender

READ_BATCH = 500
"""Views per JSON-RPC batch in `read_many`."""


class Chain:
    """Everything bound to one network. Cheap wrappers are created on demand; no global state."""

    def __init__(self, network: Network, **rpc_options: Any) -> None:
        self.network = network
        self.rpc = Rpc(network.rpc_url, **rpc_options)
        self.nexus = Nexus(self.rpc, network.nexus)
        self.controller = Controller(self.rpc, network.controller)
        self.terminal = Terminal(self.rpc, network.terminal)
        self.vault = Vault(self.rpc, network.vault)
        self.manager = Manager(self.rpc, network.manager) if network.manager else None

    def __repr__(self) -> str:
        return f"Chain({self.network.name} @ {self.network.rpc_url})"

    def source(self, address: str) -> Source:
        return Source(self.rpc, address)

    def task(self, address: str) -> Task:
        return Task(self.rpc, address)

    def response(self, address: str) -> Response:
        return Response(self.rpc, address)

    def sender(self, signer: Signer | Any, **options: Any) -> TxSender:
        """A TxSender for `signer` (a Signer, or a private key in any form Signer takes)."""
        if not isinstance(signer, Signer):
            signer = Signer(signer)
        return TxSender(self.rpc, signer, self.network.chain_id, **options)

    def block_number(self) -> int:
        return int(self.rpc.call("eth_blockNumber"), 16)

    def timestamp(self, block: str | int = "latest") -> int:
        blk = hex(block) if isinstance(block, int) else block
        return int(self.rpc.call("eth_getBlockByNumber", [blk, False])["timestamp"], 16)

    def now(self) -> int:
        """The timestamp the next block will carry (the "pending" block): what the contracts'
        `block.timestamp` checks will see. Unlike the latest block's, it advances while the chain
        is idle (anvil mines only on demand)."""
        return self.timestamp("pending")

    def balance(self, address: str) -> int:
        return int(self.rpc.call("eth_getBalance", [address, "latest"]), 16)

    def read_many(self, calls: Sequence[tuple[Any, str, tuple[Any, ...]]], block: str = "latest") -> list[Any]:
        """Batched views: [(wrapper, fn name, args)] -> decoded results, in order. A reverting
        view raises its typed error."""
        out = []
        for start in range(0, len(calls), READ_BATCH):  # a reply is held whole: bound it
            part = calls[start:start + READ_BATCH]
            payload = [("eth_call", [{"to": c.address, "data": "0x" + c.encode(fn, args).hex()}, block])
                       for c, fn, args in part]
            for (c, fn, _), raw in zip(part, self.rpc.batch(payload)):
                if isinstance(raw, RpcError) and (raw.revert_data is not None or "revert" in raw.message.lower()):
                    raise revert_error(raw.revert_data or b"", context=f"{c.NAME}.{fn}")
                if isinstance(raw, Exception):
                    raise raw
                out.append(c.decode_result(fn, raw))
        return out

    def events(self, names: Iterable[str], from_block: int, to_block: int | None = None) -> list[Any]:
        """Nexus lifecycle events by name over a block range."""
        from .events import get_events

        return get_events(self.rpc, self.network.nexus, "Nexus", names, from_block, to_block)
