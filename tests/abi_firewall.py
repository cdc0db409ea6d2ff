"""A loopback JSON-RPC proxy in front of anvil that refuses every call into our contracts whose
selector is not in the real network's ABIs (../shared/opengpu/abis/mainnet): eth_call,
eth_estimateGas and the like by their `to` and data, transactions by decoding the signed bytes,
and eth_getLogs filters by their topic0. A scenario run through it that ends with
`firewall.refused == []` used only what the real network's contracts have:

    with AbiFirewall(devnet.rpc_url, singletons=devnet.contracts, strict=True) as firewall:
        chain = Chain(devnet.network.with_rpc(firewall.url))
        ...  # the scenario; strict: leaving the block asserts nothing was refused
"""

from __future__ import annotations

import http.server
import json
import logging
import threading
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

import rlp
from eth_utils import keccak

from ogpu_prefect._loopback import LoopbackServer
from ogpu_prefect.chain.abi import canonical_type, checksum_address, events_by_topic, spec
from ogpu_prefect.chain.rpc import http_session

log = logging.getLogger(__name__)

MAINNET_ABIS = Path(__file__).resolve().parents[2] / "shared" / "opengpu" / "abis" / "mainnet"
SINGLETONS = ("Manager", "Terminal", "Nexus", "Vault", "Controller")
CLONES = ("Source", "Task", "Response")
CALL_LIKE = {"eth_call", "eth_estimateGas", "eth_createAccessList", "eth_sendTransaction"}
RAW_TX = {"eth_sendRawTransaction", "eth_sendRawTransactionSync"}
LOG_FILTERS = {"eth_getLogs", "eth_newFilter"}
EIP1167_PREFIX = bytes.fromhex("363d3d373d3d3d363d73")  # then the implementation's 20 bytes
REFUSED_CODE = -32601


class Refusal(NamedTuple):
    method: str
    to: str | None
    selector: str  # 0x + 4 bytes (or an event's topic0)
    name: str | None  # our artifact's signature for it, if we know it


def _signature(entry: dict[str, Any]) -> str:
    return f"{entry['name']}({','.join(canonical_type(p) for p in entry['inputs'])})"


@cache
def mainnet_abi(name: str) -> tuple[dict[str, Any], ...]:
    return tuple(json.loads((MAINNET_ABIS / f"{name}Abi.json").read_text()))  # ../shared, beside the repo


@cache
def mainnet_selectors(name: str) -> frozenset[bytes]:
    return frozenset(keccak(text=_signature(e))[:4] for e in mainnet_abi(name) if e["type"] == "function")


@cache
def mainnet_topics() -> frozenset[bytes]:
    names = SINGLETONS + CLONES
    return frozenset(keccak(text=_signature(e)) for n in names for e in mainnet_abi(n) if e["type"] == "event")


def raw_tx_target(raw: bytes) -> tuple[str | None, bytes]:
    """A signed transaction (legacy, EIP-2930, EIP-1559 or EIP-7702) -> (to or None, data)."""
    if raw[0] >= 0xC0:  # legacy: an RLP list [nonce, gasPrice, gas, to, value, data, v, r, s]
        fields, at = rlp.decode(raw), 3
    elif raw[0] == 1:  # [chainId, nonce, gasPrice, gas, to, value, data, ...]
        fields, at = rlp.decode(raw[1:]), 4
    elif raw[0] in (2, 4):  # [chainId, nonce, maxPriorityFee, maxFee, gas, to, value, data, ...]
        fields, at = rlp.decode(raw[1:]), 5
    else:
        raise ValueError(f"transaction type {raw[0]} is not one the firewall decodes")
    to, data = fields[at], fields[at + 2]
    return (checksum_address(bytes(to)) if to else None), bytes(data)


def _error(r: dict[str, Any], code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": r.get("id"), "error": {"code": code, "message": message}}


def _our_name(names: tuple[str, ...], selector: bytes) -> str | None:
    return next((f.signature for n in names for f in spec(n).functions.values() if f.selector == selector), None)


class AbiFirewall(LoopbackServer):
    """`singletons`: a devnet profile's contracts (Nexus, Controller, ... by name). Entries named
    Source/Task/Response are the implementations, which tell a clone's type by where it delegates.
    `strict`: leaving the `with` block raises AssertionError if anything was refused."""

    def __init__(self, upstream_url: str, *, singletons: dict[str, str], strict: bool = False) -> None:
        assert upstream_url.startswith("http://127.0.0.1:"), "the firewall only fronts loopback nodes"
        self.upstream = upstream_url
        self.strict = strict
        self.refused: list[Refusal] = []
        self.allowed_count = 0
        self._lock = threading.Lock()
        named = {n[:1].upper() + n[1:]: checksum_address(a) for n, a in singletons.items() if a}  # "nexus" too
        self._fixed = {a: (n,) for n, a in named.items() if n in SINGLETONS + CLONES}
        self._impls = {a: n for n, a in named.items() if n in CLONES}
        self._code_kinds: dict[str, tuple[str, ...]] = {}  # only addresses with code: an EOA may gain some
        self._session = http_session()
        firewall = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                reply = json.dumps(firewall._serve(body)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(Handler)

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        self.stop()
        self._session.close()
        if self.strict and exc_type is None:
            self.assert_clean()

    def assert_clean(self) -> None:
        assert not self.refused, "calls outside the real network's ABIs:\n" + "\n".join(map(str, self.refused))

    # ---- serving ----

    def _serve(self, body: Any) -> Any:
        requests = body if isinstance(body, list) else [body]
        verdicts = self._judge(requests)
        allowed = [r for r, v in zip(requests, verdicts) if v is None]
        with self._lock:
            self.allowed_count += len(allowed)
        if not isinstance(body, list):
            return verdicts[0] or self._forward(body)
        # Refused entries are answered here, in place; the rest go upstream as one batch.
        replies = self._forward(allowed) if allowed else []
        if not isinstance(replies, list):  # the node refused the whole batch: its error for each
            replies = [{**replies, "id": r.get("id")} for r in allowed]
        by_id = {r.get("id"): r for r in replies}
        return [
            v or by_id.get(r.get("id"), _error(r, -32603, "abi firewall: no reply")) for r, v in zip(requests, verdicts)
        ]

    def _forward(self, body: Any) -> Any:
        return self._session.post(self.upstream, json=body, timeout=60).json()

    # ---- judging ----

    def _judge(self, requests: list[dict[str, Any]]) -> list[dict[str, Any] | None]:
        """Each request -> None (allowed) or its JSON-RPC error reply."""
        targets: list[tuple[str | None, bytes] | str | None] = []
        for r in requests:
            try:
                targets.append(self._target(r))
            except (LookupError, AttributeError, TypeError, ValueError, rlp.exceptions.DecodingError) as e:
                targets.append(f"abi firewall: cannot read the target of {r.get('method')} ({e})")
        self._learn_code({t[0] for t in targets if isinstance(t, tuple) and t[0]})
        out: list[dict[str, Any] | None] = []
        for r, t in zip(requests, targets):
            if isinstance(t, str):
                out.append(self._refuse(r, Refusal(r.get("method", ""), None, "", None), t))
            elif r.get("method") in LOG_FILTERS:
                out.append(self._check_topics(r))
            else:  # other methods, and contract creations (the devnet's own business), pass
                out.append(self._check_call(r, t[0], t[1]) if t and t[0] else None)
        return out

    def _target(self, r: dict[str, Any]) -> tuple[str | None, bytes] | None:
        method, params = r.get("method"), r.get("params") or []
        if method in CALL_LIKE:
            data = params[0].get("input") or params[0].get("data") or "0x"
            return (checksum_address(params[0]["to"]) if params[0].get("to") else None), bytes.fromhex(data[2:])
        return raw_tx_target(bytes.fromhex(params[0][2:])) if method in RAW_TX else None

    def _check_call(self, r: dict[str, Any], to: str, data: bytes) -> dict[str, Any] | None:
        if self._allows(to, data):
            return None
        if to not in self._fixed:  # a clone learnt before an evm_revert may be another one now
            self._code_kinds.pop(to, None)
            self._learn_code({to})
            if self._allows(to, data):
                return None
        kinds, sel = self._kinds(to), "0x" + data[:4].hex()
        name = _our_name(kinds, data[:4])
        shown = f"selector {sel} ({name or 'unknown'})" if len(data) >= 4 else f"call data {sel} (no selector)"
        msg = f"abi firewall: {shown} is not in the real network's {'/'.join(kinds)} ABI"
        return self._refuse(r, Refusal(r["method"], to, sel, name), msg)

    def _check_topics(self, r: dict[str, Any]) -> dict[str, Any] | None:
        topics = (r["params"][0].get("topics") or [None])[0]
        for t in [topics] if isinstance(topics, str) else topics or []:
            if isinstance(t, str) and bytes.fromhex(t[2:]) not in mainnet_topics():
                event = events_by_topic().get(bytes.fromhex(t[2:]))
                name = event.signature if event else None
                msg = f"abi firewall: event {name or t} is not in the real network's ABIs"
                return self._refuse(r, Refusal(r["method"], r["params"][0].get("address"), t, name), msg)
        return None

    def _refuse(self, r: dict[str, Any], refusal: Refusal, message: str) -> dict[str, Any]:
        log.warning("%s", message)
        with self._lock:
            self.refused.append(refusal)
        return _error(r, REFUSED_CODE, message)

    # ---- what is at an address ----

    def _allows(self, to: str, data: bytes) -> bool:
        kinds = self._kinds(to)
        return not kinds or any(data[:4] in mainnet_selectors(k) for k in kinds)

    def _kinds(self, address: str) -> tuple[str, ...]:
        """The contract(s) whose ABI governs `address`; () for an address without code."""
        return self._fixed.get(address) or self._code_kinds.get(address, ())

    def _learn_code(self, addresses: set[str]) -> None:
        """Classifies unknown addresses by their code, in one upstream batch."""
        todo = sorted(a for a in addresses if a not in self._fixed and a not in self._code_kinds)
        if not todo:
            return
        batch = [
            {"jsonrpc": "2.0", "id": i, "method": "eth_getCode", "params": [a, "latest"]} for i, a in enumerate(todo)
        ]
        replies = {r["id"]: r.get("result") or "0x" for r in self._forward(batch)}
        for i, address in enumerate(todo):
            code = bytes.fromhex(replies.get(i, "0x")[2:])
            if not code:
                continue
            impl = checksum_address(code[10:30]) if code.startswith(EIP1167_PREFIX) else None
            # A clone of a known implementation is checked against its type; anything else
            # with code (an unknown implementation) against all three clone types.
            self._code_kinds[address] = (self._impls[impl],) if impl in self._impls else CLONES
