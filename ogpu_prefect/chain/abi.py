"""The compiled artifacts shipped in `artifacts/`, and the ABI encoding and decoding built on them.

Encoding goes straight through eth_abi with precomputed selectors and type strings: web3's contract
objects cost milliseconds of Python per call, which matters when a batch is thousands of tasks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources
from typing import Any

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_hash.auto import keccak as _keccak256
from eth_utils import to_checksum_address

from .structs import STRUCTS
from .types import ENUMS


def keccak(data: bytes = b"", *, text: str | None = None) -> bytes:
    """Keccak-256 of `data`, or of `text` as UTF-8: the package's one keccak (eth_hash's, without
    eth_utils' argument dispatch)."""
    return _keccak256(text.encode() if text is not None else data)


@lru_cache(maxsize=16384)
def checksum_address(value: bytes | str) -> str:
    """EIP-55 address from 20 raw bytes or hex. Decoding a batch's receipts meets the same few
    addresses (Nexus, the source) thousands of times: cached, and without eth_utils' validation
    layers (about 2x eth_utils uncached: bench/micro.py, BENCHMARKS.md)."""
    try:
        raw = value if isinstance(value, bytes) else bytes.fromhex(value[2:] if value[:2] in ("0x", "0X") else value)
    except (TypeError, ValueError):
        raw = b""
    if len(raw) != 20:
        return to_checksum_address(value)  # its error for what is not an address
    hexaddr = raw.hex()
    digest = _keccak256(hexaddr.encode()).hex()  # the hot path: keccak without the wrapper
    return "0x" + "".join(c.upper() if d in "89abcdef" else c for c, d in zip(hexaddr, digest))


CONTRACT_NAMES = ("Manager", "Terminal", "Nexus", "Vault", "Controller", "Source", "Task", "Response")


def canonical_type(param: dict[str, Any]) -> str:
    """ABI param -> canonical type string, tuples expanded: `(address,string,uint256)[]`."""
    t = param["type"]
    if t.startswith("tuple"):
        return "(" + ",".join(canonical_type(c) for c in param["components"]) + ")" + t[len("tuple") :]
    return t


@cache
def _fast_tree(types: tuple[str, ...]) -> Any:
    return _parse("(" + ",".join(types) + ")")


def _to_python(param: dict[str, Any], value: Any) -> Any:
    internal = param.get("internalType", "")
    t = param["type"]
    if t == "address":
        return checksum_address(value)
    if t == "address[]":
        return [checksum_address(v) for v in value]
    if internal.startswith("enum "):
        enum = ENUMS.get(internal.split()[-1].split(".")[-1])
        return enum(value) if enum else value
    if internal.startswith("struct ") and t == "tuple":
        values = tuple(_to_python(c, v) for c, v in zip(param["components"], value))
        struct = STRUCTS.get(internal.split()[-1].split(".")[-1])
        return struct.from_tuple(values) if struct else values
    return value


def _to_abi(value: Any) -> Any:
    if hasattr(value, "as_tuple"):
        return tuple(_to_abi(v) for v in value.as_tuple())
    if isinstance(value, (list, tuple)):
        return type(value)(_to_abi(v) for v in value)
    if isinstance(value, int):  # IntEnum / bool stay ints for eth_abi
        return bool(value) if isinstance(value, bool) else int(value)
    return value


def _parse(t: str) -> Any:
    """Canonical type -> a tree fast_encode understands, or None where eth_abi must do it."""
    if t.startswith("(") and t.endswith(")"):
        parts, depth, cur = [], 0, ""
        for ch in t[1:-1]:
            if ch == "," and depth == 0:
                parts.append(cur)
                cur = ""
                continue
            depth += ch == "("
            depth -= ch == ")"
            cur += ch
        if cur:
            parts.append(cur)
        kids = [_parse(p) for p in parts]
        return None if any(k is None for k in kids) else ("tuple", kids)
    if t in ("address", "bool", "bytes32", "string", "bytes") or (t.startswith("uint") and "[" not in t):
        return t
    return None


def _dynamic(node: Any) -> bool:
    if isinstance(node, tuple):
        return any(_dynamic(k) for k in node[1])
    return node in ("string", "bytes")


def _encode(node: Any, value: Any) -> bytes:
    if isinstance(node, tuple):
        kids = node[1]
        heads, tails = [], []
        offset = 32 * len(kids)
        for kid, v in zip(kids, value):
            enc = _encode(kid, v)
            if _dynamic(kid):
                heads.append(offset.to_bytes(32, "big"))
                tails.append(enc)
                offset += len(enc)
            else:
                heads.append(enc)
        return b"".join(heads) + b"".join(tails)
    if node == "address":
        raw = bytes.fromhex(value[2:]) if isinstance(value, str) else bytes(value)
        if len(raw) != 20:
            raise ValueError(f"not an address: {value!r}")
        return b"\x00" * 12 + raw
    if node == "bool":
        return (1 if value else 0).to_bytes(32, "big")
    if node == "bytes32":
        raw = bytes(value)
        if len(raw) != 32:
            raise ValueError("bytes32 needs 32 bytes")
        return raw
    if node in ("string", "bytes"):
        raw = value.encode() if node == "string" else bytes(value)
        pad = (-len(raw)) % 32
        return len(raw).to_bytes(32, "big") + raw + b"\x00" * pad
    bits = int(node[4:] or 256)
    v = int(value)
    if not 0 <= v < 2**bits:
        raise ValueError(f"{v} does not fit {node}")
    return v.to_bytes(32, "big")


@dataclass(frozen=True)
class Function:
    contract: str
    name: str
    signature: str
    selector: bytes
    input_types: tuple[str, ...]
    outputs: tuple[dict[str, Any], ...]
    output_types: tuple[str, ...]
    mutability: str

    def encode(self, args: tuple[Any, ...]) -> bytes:
        values = tuple(_to_abi(a) for a in args)
        tree = _fast_tree(self.input_types)
        if tree is not None:  # plain types: a direct encoder, 2.5-6x eth_abi (bench/micro.py; tests/test_abi.py)
            return self.selector + _encode(tree, values)
        return self.selector + abi_encode(self.input_types, values)

    def decode(self, data: bytes) -> Any:
        values = abi_decode(self.output_types, data)
        out = tuple(_to_python(p, v) for p, v in zip(self.outputs, values))
        return out[0] if len(out) == 1 else out


STATIC_WORD_TYPES = ("address", "bool", "uint8", "uint256")


def _word(param: dict[str, Any], word: bytes) -> Any:
    if param["type"] == "address":
        return checksum_address(word[12:])
    value = int.from_bytes(word, "big")
    return _to_python(param, bool(value) if param["type"] == "bool" else value)


@dataclass(frozen=True)
class Event:
    contract: str
    name: str
    signature: str
    topic0: bytes
    inputs: tuple[dict[str, Any], ...]

    @property
    def _static(self) -> bool:
        """Every field a non-indexed one-word value (all the protocol's lifecycle events)."""
        return all(not p.get("indexed") and p["type"] in STATIC_WORD_TYPES for p in self.inputs)

    def decode(self, topics: list[bytes], data: bytes) -> dict[str, Any]:
        if self._static and len(data) == 32 * len(self.inputs):  # the hot path: no eth_abi
            words = [data[i : i + 32] for i in range(0, len(data), 32)]
            return {p["name"]: _word(p, w) for p, w in zip(self.inputs, words)}
        indexed = [p for p in self.inputs if p.get("indexed")]
        plain = [p for p in self.inputs if not p.get("indexed")]
        values = dict(zip((p["name"] for p in plain), abi_decode([canonical_type(p) for p in plain], data)))
        for p, topic in zip(indexed, topics[1:]):
            values[p["name"]] = abi_decode([canonical_type(p)], topic)[0]
        return {p["name"]: _to_python(p, values[p["name"]]) for p in self.inputs}


@dataclass(frozen=True)
class ContractSpec:
    name: str
    abi: tuple[dict[str, Any], ...]
    bytecode: bytes
    functions: dict[str, Function]
    events: dict[str, Event]
    errors: dict[bytes, tuple[str, tuple[str, ...]]]

    def deploy_data(self, *args: Any) -> bytes:
        """Creation code with constructor arguments."""
        ctor = next((e for e in self.abi if e["type"] == "constructor"), None)
        types = [canonical_type(p) for p in ctor["inputs"]] if ctor else []
        return self.bytecode + (abi_encode(types, tuple(_to_abi(a) for a in args)) if types else b"")

    def fn(self, name: str) -> Function:
        try:
            return self.functions[name]
        except KeyError:
            raise AttributeError(f"{self.name} has no function {name!r}") from None


@cache
def spec(name: str) -> ContractSpec:
    """The artifact of one of CONTRACT_NAMES, parsed."""
    raw = json.loads(resources.files(__package__).joinpath("artifacts", f"{name}.json").read_text())
    functions: dict[str, Function] = {}
    events: dict[str, Event] = {}
    errors: dict[bytes, tuple[str, tuple[str, ...]]] = {}
    for entry in raw["abi"]:
        kind = entry["type"]
        if kind in ("function", "event", "error"):
            types = tuple(canonical_type(p) for p in entry["inputs"])
            sig = f"{entry['name']}({','.join(types)})"
        if kind == "function":
            outputs = tuple(entry.get("outputs", ()))
            functions[entry["name"]] = Function(
                name,
                entry["name"],
                sig,
                keccak(text=sig)[:4],
                types,
                outputs,
                tuple(canonical_type(p) for p in outputs),
                entry["stateMutability"],
            )
        elif kind == "event":
            events[entry["name"]] = Event(name, entry["name"], sig, keccak(text=sig), tuple(entry["inputs"]))
        elif kind == "error":
            errors[keccak(text=sig)[:4]] = (entry["name"], types)
    return ContractSpec(name, tuple(raw["abi"]), bytes.fromhex(raw["bytecode"][2:]), functions, events, errors)


@cache
def events_by_topic() -> dict[bytes, Event]:
    """Every protocol event by topic0 (Nexus first: it is the hub that emits lifecycle events)."""
    table: dict[bytes, Event] = {}
    for name in CONTRACT_NAMES:
        for event in spec(name).events.values():
            table.setdefault(event.topic0, event)
    return table


@cache
def errors_by_selector() -> dict[bytes, tuple[str, tuple[str, ...]]]:
    table: dict[bytes, tuple[str, tuple[str, ...]]] = {}
    for name in CONTRACT_NAMES:
        table.update(spec(name).errors)
    return table
