"""The base of the generated wrappers: an address, an RPC, and its artifact's encoders; and `Read`,
one view call as a value, for batched reads (`Chain.read_many`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Literal, TypeVar

from .abi import checksum_address, spec
from .errors import NoContractError, as_revert
from .rpc import Rpc
from .tx import Call

BlockId = int | Literal["latest", "pending", "earliest", "safe", "finalized"]
T = TypeVar("T")


def block_param(block: BlockId) -> str:
    return hex(block) if isinstance(block, int) else block


@dataclass(frozen=True)
class Read(Generic[T]):
    """One view call: `contract.read.get_status()` is a `Read[TaskStatus]`. `call()` sends it
    alone; `Chain.read_many` sends many in one JSON-RPC batch."""

    contract: Contract
    fn: str
    args: tuple[Any, ...] = ()

    @property
    def context(self) -> str:
        return f"{self.contract.NAME}.{self.fn}"

    def request(self, block: BlockId = "latest") -> tuple[str, list[Any]]:
        data = "0x" + self.contract.spec.fn(self.fn).encode(self.args).hex()
        return "eth_call", [{"to": self.contract.address, "data": data}, block_param(block)]

    def decode(self, raw: Any) -> T:
        """The reply to `request` (an RpcError stands for a failed call) -> the decoded value, or
        the typed error: a revert, or NoContractError for an empty reply (a view of ours always
        returns data, so an empty one means no code at the address)."""
        if isinstance(raw, Exception):
            raise as_revert(raw, self.context) or raw
        f = self.contract.spec.fn(self.fn)
        if raw in ("0x", "") and f.output_types:
            raise NoContractError(f"no contract at {self.contract.address}", context=self.context)
        return f.decode(bytes.fromhex(raw[2:]))  # type: ignore[no-any-return]

    def call(self, block: BlockId = "latest") -> T:
        method, params = self.request(block)
        try:
            raw = self.contract.rpc.call(method, params)
        except Exception as e:  # decode turns a revert into its typed error
            raw = e
        return self.decode(raw)


class Contract:
    NAME: ClassVar[str]

    def __init__(self, rpc: Rpc, address: str) -> None:
        self.rpc = rpc
        self.address = checksum_address(address)
        self.spec = spec(self.NAME)

    def __repr__(self) -> str:
        return f"{self.NAME}({self.address})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.address == self.address  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((self.NAME, self.address))

    def _tx(self, fn: str, args: tuple[Any, ...], value: int = 0) -> Call:
        return Call(self.address, self.spec.fn(fn).encode(args), value, f"{self.NAME}.{fn}")
