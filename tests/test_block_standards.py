"""Every block of ogpu_prefect meets Prefect's block standards (description, documentation URL,
described fields, a code example that loads it), as prefect-kubernetes tests its own."""

from __future__ import annotations

import pytest
from prefect.blocks.core import Block
from prefect.testing.standard_test_suites import BlockStandardTestSuite
from prefect.utilities.dispatch import get_registry_for_type
from prefect.utilities.importtools import to_qualified_name

import ogpu_prefect.collection  # noqa: F401  (what the entry point loads)


def find_module_blocks() -> list[type[Block]]:
    blocks = get_registry_for_type(Block) or {}
    return [b for b in blocks.values() if to_qualified_name(b).startswith("ogpu_prefect")]


def test_the_collection_registers_three_blocks() -> None:
    assert {b.__name__ for b in find_module_blocks()} == {"OGPUNetwork", "OGPUWallet", "OGPUStorage"}


def test_the_entry_point_is_declared() -> None:
    from importlib.metadata import entry_points

    eps = {ep.name: ep.value for ep in entry_points(group="prefect.collections")}
    assert eps.get("ogpu_prefect") == "ogpu_prefect.collection"


@pytest.mark.parametrize("block", find_module_blocks())
class TestAllBlocksAdhereToStandards(BlockStandardTestSuite):
    @pytest.fixture
    def block(self, block: type[Block]) -> type[Block]:
        return block


def test_wallet_never_shows_its_key() -> None:
    from ogpu_prefect.blocks import OGPUWallet
    from ogpu_prefect.chain.devnet import DEV_KEYS

    key = DEV_KEYS[1]
    wallet = OGPUWallet(private_key=key)
    for text in (repr(wallet), str(wallet), wallet.model_dump_json(), str(wallet.model_dump())):
        assert key[2:] not in text
    assert wallet.address == "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
    with pytest.raises(ValueError) as info:
        OGPUWallet(private_key="0x1234" + "g" * 60)
    assert "gggg" not in str(info.value)
