"""The base of the generated wrappers: an address, an RPC, and its artifact's encoders."""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Union

from .abi import checksum_address, spec
from .errors import NoContractError, RpcError, revert_error
from .rpc import Rpc
from .tx import Call

BlockId = Union[int, Literal["latest", "pending", "earliest", "safe", "finalized"]]


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

    def encode(self, fn: str, args: tuple[Any, ...]) -> bytes:
        return self.spec.fn(fn).encode(args)

    def _call(self, fn: str, args: tuple[Any, ...], block: BlockId = "latest") -> Any:
        f = self.spec.fn(fn)
        blk = hex(block) if isinstance(block, int) else block
        try:
            raw = self.rpc.call("eth_call", [{"to": self.address, "data": "0x" + f.encode(args).hex()}, blk])
        except RpcError as e:
            if e.revert_data is not None or "revert" in e.message.lower():
                raise revert_error(e.revert_data or b"", context=f"{self.NAME}.{fn}") from None
            raise
        return self.decode_result(fn, raw)

    def decode_result(self, fn: str, raw: str) -> Any:
        """An eth_call's hex reply to `fn`, decoded. An empty reply means no code at the address
        (a view of ours always returns data): NoContractError, not a decoder's complaint."""
        f = self.spec.fn(fn)
        if raw in ("0x", "") and f.output_types:
            raise NoContractError(f"no contract at {self.address}", context=f"{self.NAME}.{fn}")
        return f.decode(bytes.fromhex(raw[2:]))

    def _tx(self, fn: str, args: tuple[Any, ...], value: int = 0) -> Call:
        return Call(self.address, self.spec.fn(fn).encode(args), value, f"{self.NAME}.{fn}")
