"""Our compiled contracts against the real network's ABIs (../shared/opengpu/abis): every
function selector and mutability, every event signature with the same (non-indexed) fields, struct
layouts, enum values and the revert-string tokens the official SDK maps to typed errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ogpu_prefect.chain.abi import CONTRACT_NAMES, canonical_type, spec
from ogpu_prefect.chain.types import DeliveryMethod, Environment, ResponseStatus, SourceStatus, TaskStatus

SHARED = Path(__file__).resolve().parents[2] / "shared" / "opengpu"
REPO = Path(__file__).resolve().parents[1]


def reference(name: str) -> list[dict]:
    path = SHARED / "abis" / "mainnet" / f"{name}Abi.json"
    if not path.exists():
        pytest.fail(f"{path} missing: the ABI compatibility target must sit beside the repo in ../shared")
    return json.loads(path.read_text())


def signature(entry: dict) -> str:
    return f"{entry['name']}({','.join(canonical_type(p) for p in entry['inputs'])})"


def ours(name: str, kind: str) -> dict[str, dict]:
    return {signature(e): e for e in spec(name).abi if e["type"] == kind}


@pytest.mark.parametrize("name", CONTRACT_NAMES)
def test_every_function_is_present_with_its_outputs_and_mutability(name: str) -> None:
    mine = ours(name, "function")
    for entry in (e for e in reference(name) if e["type"] == "function"):
        sig = signature(entry)
        assert sig in mine, f"{name}.{sig} missing"
        assert mine[sig]["stateMutability"] == entry["stateMutability"], sig
        assert [canonical_type(o) for o in mine[sig]["outputs"]] == [canonical_type(o) for o in entry["outputs"]], sig


@pytest.mark.parametrize("name", CONTRACT_NAMES)
def test_every_event_has_the_same_fields_and_indexing(name: str) -> None:
    mine = ours(name, "event")
    for entry in (e for e in reference(name) if e["type"] == "event"):
        sig = signature(entry)
        assert sig in mine, f"{name} event {sig} missing"
        assert [p["indexed"] for p in mine[sig]["inputs"]] == [p["indexed"] for p in entry["inputs"]], sig
        assert [p["name"] for p in mine[sig]["inputs"]] == [p["name"] for p in entry["inputs"]], sig


@pytest.mark.parametrize("name", CONTRACT_NAMES)
def test_errors_and_constructor_match(name: str) -> None:
    mine = ours(name, "error")
    for entry in (e for e in reference(name) if e["type"] == "error"):
        assert signature(entry) in mine, f"{name} error {signature(entry)} missing"
    ref_ctor = next(e for e in reference(name) if e["type"] == "constructor")
    my_ctor = next(e for e in spec(name).abi if e["type"] == "constructor")
    assert [canonical_type(p) for p in my_ctor["inputs"]] == [canonical_type(p) for p in ref_ctor["inputs"]]
    assert my_ctor["stateMutability"] == ref_ctor["stateMutability"]


def test_selectors_file_is_fully_covered() -> None:
    """Every line of abis/selectors.txt (functions, events, errors) is in our artifacts."""
    have: dict[str, set[str]] = {}
    for name in CONTRACT_NAMES:
        s = spec(name)
        have[name] = {f.selector.hex() for f in s.functions.values()}
        have[name] |= {e.topic0.hex() for e in s.events.values()}
        have[name] |= {sel.hex() for sel in s.errors}
    current = None
    checked = 0
    for line in (SHARED / "abis" / "selectors.txt").read_text().splitlines():
        if line.startswith("## "):
            current = line[3:].strip()
        elif current and re.match(r"^(fu|ev|er) [0-9a-f]+ ", line):
            _, hexsel, sig = line.split(" ", 2)
            assert hexsel in have[current], f"{current}: {sig} ({hexsel}) missing"
            checked += 1
    assert checked > 200


def test_struct_layouts() -> None:
    fn = spec("Nexus").fn("publishSource")
    assert fn.input_types == ("(address,string,uint8,uint256,uint256,uint256,bool,string,uint8,uint256)",)
    assert spec("Controller").fn("publishTask").input_types == ("(address,string,uint256,uint256)",)
    assert spec("Nexus").fn("submitResponse").input_types == ("(address,address,string,uint256)",)
    for name, fn_name in (("Source", "getSourceParams"), ("Response", "getResponseParams")):
        ref = next(e for e in reference(name) if e.get("name") == fn_name)
        mine = next(e for e in spec(name).abi if e.get("name") == fn_name)
        assert [c["name"] for c in mine["outputs"][0]["components"]] == [
            c["name"] for c in ref["outputs"][0]["components"]
        ]
        assert mine["outputs"][0]["internalType"] == ref["outputs"][0]["internalType"]


def test_enum_values_match_the_official_sdk() -> None:
    from ogpu.types import enums

    for ours_enum, theirs in (
        (TaskStatus, enums.TaskStatus),
        (SourceStatus, enums.SourceStatus),
        (ResponseStatus, enums.ResponseStatus),
        (DeliveryMethod, enums.DeliveryMethod),
    ):
        assert {m.name: m.value for m in ours_enum} == {m.name: m.value for m in theirs}, ours_enum
    assert {m.name: m.value for m in Environment} == {"CPU": 1, "NVIDIA": 2, "AMD": 4}


def test_revert_tokens_the_sdk_maps_are_used_by_our_contracts() -> None:
    from ogpu.protocol._base import REVERT_PATTERN_MAP

    sources = "\n".join(p.read_text() for p in (REPO / "contracts" / "src").glob("*.sol"))
    reasons = re.findall(r'"([A-Z][A-Za-z]+)(?::[^"]*)?"', sources)
    for token in REVERT_PATTERN_MAP:
        assert token in reasons, f"no revert reason starts with {token!r}"
