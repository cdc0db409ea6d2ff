"""Where the protocol lives: an RPC URL, a chain id and the singleton addresses. A value, passed
around explicitly, so that two networks can be used side by side in one process."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .abi import checksum_address
from .errors import InvalidInputError


@dataclass(frozen=True)
class Network:
    name: str
    rpc_url: str
    chain_id: int
    nexus: str
    controller: str
    terminal: str
    vault: str
    manager: str | None = None  # the SDK has no Manager address for the real networks
    rate_limit: float | None = None  # the endpoint's calls/s (each call in a batch counts); None: unmetered

    def __post_init__(self) -> None:
        if self.rate_limit is not None and not (isinstance(self.rate_limit, int | float) and self.rate_limit > 0):
            raise InvalidInputError("rate_limit", f"expected calls per second > 0, got {self.rate_limit!r}")
        for role in ("nexus", "controller", "terminal", "vault", "manager"):
            value = getattr(self, role)
            if value is not None:
                object.__setattr__(self, role, checksum_address(value))

    def with_rpc(self, rpc_url: str) -> Network:
        return Network(**{**asdict(self), "rpc_url": rpc_url})

    @classmethod
    def from_profile(cls, profile: dict[str, Any] | str | Path) -> Network:
        """From a devnet profile (the dict, or the path of its JSON file)."""
        if not isinstance(profile, dict):
            profile = json.loads(Path(profile).read_text())
        c = profile["contracts"]
        return cls(
            name=profile.get("name", "devnet"),
            rpc_url=profile["rpc_url"],
            chain_id=int(profile["chain_id"]),
            nexus=c["Nexus"],
            controller=c["Controller"],
            terminal=c["Terminal"],
            vault=c["Vault"],
            manager=c.get("Manager"),
        )


# PROTOCOL.md 1.1 (ogpu SDK 0.2.3 `ogpu/chain/config.py`): name, RPC, chain id, Nexus, Controller,
# Terminal, Vault.
# fmt: off
_REAL = {  # a table, kept one network to a few lines
    "mainnet": ("https://mainnet-rpc.ogpuscan.io", 1071, "0x2b0cC6058313801D5feb184a539e3a0C5A87a6a1",
                "0x8661F4B9c30e07A04d795A192478dfD905625a1D", "0xaEBC7b712D38Fc4d841f0732c21B8774339869D3",
                "0xa5c582254AA313528898311362bc698b041580cC"),
    "testnet": ("https://testnetrpc.ogpuscan.io", 200820172034, "0xF87bb2f3edB991a998992f14d35fE142e6Bb50b1",
                "0x9fb6022074Fd7Bdb429de0776eb693cA0CB55E09", "0x1ea332Fc14a5AFD3AF3852B45C263Ab5b1Dd6f52",
                "0x15905a2FbD3EF5d3532b931b5656BB9EB493Bb15"),
}
# fmt: on
PRESETS = {name: Network(name, *values) for name, values in _REAL.items()}
MAINNET, TESTNET = PRESETS["mainnet"], PRESETS["testnet"]
