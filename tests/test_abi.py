"""Our direct ABI encoder matches eth_abi byte for byte, for every function of every contract,
on random arguments."""

from __future__ import annotations

import random

import pytest
from eth_abi import encode as abi_encode

from ogpu_prefect.chain.abi import CONTRACT_NAMES, _fast_tree, _to_abi, spec


def random_value(t: str, rng: random.Random):
    if t.startswith("("):
        from ogpu_prefect.chain.abi import _parse

        return tuple(random_value(k if isinstance(k, str) else "(" + ")", rng) for k in _parse(t)[1])
    if t == "address":
        return "0x" + rng.randbytes(20).hex()
    if t == "bool":
        return rng.random() < 0.5
    if t == "bytes32":
        return rng.randbytes(32)
    if t == "string":
        return "".join(rng.choice("abcé✓/:") for _ in range(rng.randrange(0, 90)))
    if t == "bytes":
        return rng.randbytes(rng.randrange(0, 90))
    if t.startswith("uint"):
        return rng.randrange(0, 2 ** int(t[4:] or 256))
    raise AssertionError(t)


@pytest.mark.parametrize("name", CONTRACT_NAMES)
def test_direct_encoding_matches_eth_abi(name: str) -> None:
    rng = random.Random(name)
    checked = 0
    for fn in spec(name).functions.values():
        if _fast_tree(fn.input_types) is None:
            continue
        for _ in range(10):
            args = tuple(random_value(t, rng) for t in fn.input_types)
            assert fn.encode(args) == fn.selector + abi_encode(fn.input_types, tuple(_to_abi(a) for a in args)), (
                fn.signature
            )
            checked += 1
    assert checked > 0
