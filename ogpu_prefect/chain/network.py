"""Where the protocol lives: an RPC URL, a chain id and the singleton addresses. A value, passed
around explicitly, so that two networks can be used side by side in one process."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .abi import checksum_address
from .errors import InvalidInputError
from .signing import looks_like_private_key


def profile_path(home: Path) -> Path:
    """The devnet profile `devnet up` writes in `home` (the `home` setting,
    PREFECT_INTEGRATIONS_OGPU_HOME) and `Network.from_profile` reads."""
    return home / "devnet.json"


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
        """Typed errors naming the field (a key pasted into one is never echoed)."""
        for field in ("name", "rpc_url"):
            value = getattr(self, field)
            if looks_like_private_key(value):
                raise InvalidInputError(field, "this looks like a private key, which does not belong here")
            if not isinstance(value, str) or not value.strip():
                raise InvalidInputError(field, f"expected a non-empty string, got {type(value).__name__}")
        if isinstance(self.chain_id, bool) or not isinstance(self.chain_id, int) or self.chain_id <= 0:
            raise InvalidInputError("chain_id", "expected a positive integer")
        limit = self.rate_limit
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int | float) or not limit > 0):
            raise InvalidInputError("rate_limit", f"expected calls per second > 0, not a {type(limit).__name__}")
        for role in ("nexus", "controller", "terminal", "vault", "manager"):
            value = getattr(self, role)
            if value is None and role == "manager":
                continue
            if looks_like_private_key(value):
                raise InvalidInputError(role, "this looks like a private key, which does not belong here")
            try:
                if not isinstance(value, str) or len(value) != 42:
                    raise ValueError
                object.__setattr__(self, role, checksum_address(value))
            except (ValueError, TypeError):
                raise InvalidInputError(role, "expected a 0x-prefixed 20-byte address") from None

    def with_rpc(self, rpc_url: str) -> Network:
        return Network(**{**asdict(self), "rpc_url": rpc_url})

    @classmethod
    def from_profile(cls, profile: dict[str, Any] | str | Path) -> Network:
        """From a devnet profile (the dict, or the path of its JSON file)."""
        try:
            if not isinstance(profile, dict):
                profile = json.loads(Path(profile).read_text())
            c = profile["contracts"]
            values = (profile["rpc_url"], profile["chain_id"], *(c[k] for k in ("Nexus", "Controller", "Terminal")))
            vault, manager = c["Vault"], c.get("Manager")
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise InvalidInputError("profile", f"not a devnet profile ({type(e).__name__})") from None
        chain_id = values[1]
        if isinstance(chain_id, str) and chain_id.isdigit():
            chain_id = int(chain_id)
        return cls(profile.get("name", "devnet"), values[0], chain_id, *values[2:], vault, manager)


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
