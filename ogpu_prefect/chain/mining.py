"""How a devnet mines: one block per transaction (anvil's automine, the default), or a block every
so many seconds with a capped block gas, as a real chain does (docs/devnet: `--block-time`)."""

from __future__ import annotations

import math
from typing import Any

from .errors import InvalidInputError
from .rpc import Rpc

MIN_GAS_LIMIT = 500_000
"""The least block gas limit a devnet takes: one publishTask, attempt or submit must fit a block."""


def check_mining(block_time: Any, gas_limit: Any) -> float | None:
    """`block_time` as seconds (None: automine), and `gas_limit` checked; typed errors name them."""
    if gas_limit is not None and (isinstance(gas_limit, bool) or not isinstance(gas_limit, int)):
        raise InvalidInputError("gas_limit", f"an int of gas, not {type(gas_limit).__name__}")
    if gas_limit is not None and gas_limit < MIN_GAS_LIMIT:
        raise InvalidInputError("gas_limit", f"{gas_limit} is below {MIN_GAS_LIMIT} (one task's transaction)")
    if block_time is None:
        return None
    if isinstance(block_time, bool) or not isinstance(block_time, (int, float)):
        raise InvalidInputError("block_time", f"seconds as a number, not {type(block_time).__name__}")
    if math.isnan(block_time) or not 0 < block_time <= 3600:
        raise InvalidInputError("block_time", f"{block_time} is outside (0, 3600] seconds")
    return float(block_time)


def set_block_time(rpc: Rpc, block_time: float | None) -> None:
    """Switches a running anvil to a block every `block_time` whole seconds (None: one block per
    transaction)."""
    block_time = check_mining(block_time, None)
    if block_time is None:
        rpc.call("evm_setIntervalMining", [0])
        rpc.call("evm_setAutomine", [True])
        return
    if not block_time.is_integer():
        raise InvalidInputError("block_time", f"{block_time}: anvil switches whole seconds at run time")
    rpc.call("evm_setAutomine", [False])
    rpc.call("evm_setIntervalMining", [int(block_time)])


def mines_on_demand(rpc: Rpc) -> bool:
    """Whether the node is anvil mining a block per transaction (automine): then a transaction
    left out of a full block waits for the next arrival, and the sender may mine one."""
    try:
        return "anvil" in str(rpc.call("web3_clientVersion")).lower() and rpc.call("anvil_getAutomine") is True
    except Exception:
        return False
