"""A devnet that mines a block every second (as a real chain does) instead of one per
transaction: `devnet.start(block_time=..., gas_limit=...)` and `ogpu-prefect devnet up
--block-time S --gas-limit G`. The chain layer's receipt waiting must work on it (the old devnet
could not start this way; its senders mined blocks of their own whenever a receipt was late)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from ogpu_prefect.chain import devnet as devnet_mod
from ogpu_prefect.chain.connection import Chain
from ogpu_prefect.chain.errors import InvalidInputError
from ogpu_prefect.chain.network import Network
from ogpu_prefect.chain.rpc import Rpc
from ogpu_prefect.chain.types import DeliveryMethod, TaskStatus

from .helpers import answered_task, publish_source, register
from .test_devnet_cli import cli


def _block(rpc: Rpc) -> tuple[int, int]:
    b = rpc.call("eth_getBlockByNumber", ["latest", False])
    return int(b["number"], 16), int(b["gasLimit"], 16)


@pytest.mark.stack  # starts anvil
def test_publish_attempt_submit_on_a_one_second_block_devnet() -> None:
    net = devnet_mod.start(block_time=1, gas_limit=30_000_000)
    try:
        rpc = Rpc(net.rpc_url)
        assert rpc.call("anvil_getAutomine") is False
        first = _block(rpc)[0]
        time.sleep(2.2)
        latest, gas_limit = _block(rpc)
        assert latest - first >= 2, "no block mined without transactions: not interval mining"
        assert gas_limit == 30_000_000

        chain = Chain(net.network)
        client, provider = chain.sender(net.key("client")), chain.sender(net.key("provider1"))
        source = publish_source(chain, client, DeliveryMethod.FIRST_RESPONSE)
        register(chain, provider, source)
        before, t1 = _block(rpc)[0], time.monotonic()
        task = answered_task(chain, client, provider, source)  # publish -> attempt -> submit, 3 receipts
        took, blocks = time.monotonic() - t1, _block(rpc)[0] - before
        assert chain.task(task).get_status() == TaskStatus.FINALIZED
        # one transaction per block at most, each awaited: the chain's own cadence, no block mined on demand
        assert blocks >= 3 and took >= 2.0, (blocks, took)
        assert blocks <= took + 2, f"{blocks} blocks in {took:.1f}s: blocks were mined on demand"
    finally:
        net.stop()


def test_the_block_time_and_gas_limit_are_checked_before_anvil_starts() -> None:
    for bad in (0, -1, float("nan"), "1", True):
        with pytest.raises(InvalidInputError) as e:
            devnet_mod.start(block_time=bad)  # type: ignore[arg-type]
        assert e.value.field == "block_time"
    with pytest.raises(InvalidInputError) as e:
        devnet_mod.start(gas_limit=21_000)
    assert e.value.field == "gas_limit"


@pytest.mark.stack  # starts anvil through the CLI
def test_devnet_up_with_block_time_and_gas_limit(tmp_path: Path) -> None:
    up = cli("devnet", "up", "--json", "--block-time", "1", "--gas-limit", "30000000", home=tmp_path)
    assert up.returncode == 0, up.stderr
    profile = json.loads(up.stdout)
    try:
        rpc = Rpc(profile["rpc_url"])
        assert rpc.call("anvil_getAutomine") is False
        time.sleep(1.2)
        assert _block(rpc)[1] == 30_000_000
        assert Chain(Network.from_profile(profile)).vault.balance_of(profile["accounts"]["client"]["address"]) > 0
    finally:
        cli("devnet", "down", home=tmp_path)
    bad = cli("devnet", "up", "--block-time", "0", home=tmp_path)
    assert bad.returncode == 2 and "--block-time" in bad.stderr
