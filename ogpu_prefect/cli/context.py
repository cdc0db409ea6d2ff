"""Where the everyday commands act and who signs, from their flags.

`--network`: a saved OGPUNetwork block's name, `devnet` (the profile `ogpu-prefect devnet up`
wrote: the default), `mainnet` / `testnet` (the presets) or a profile JSON file; `--rpc-url`
overrides its endpoint. The signer: `--wallet` (a role of the profile, such as `client` or
`provider1`, else a saved OGPUWallet block's name), `--key-env VAR` or `--key-file PATH`; a key is
never taken on the command line itself (it would sit in the shell history and the process list).
With no flags: the devnet and its `client` role (`provider1` for provider commands). Prefect is
imported only to load a block by name; everything here is imported lazily, inside commands."""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .output import note

if TYPE_CHECKING:
    from ..chain.connection import Chain
    from ..chain.network import Network
    from ..client import OGPUClient

HOME_ENV = "PREFECT_INTEGRATIONS_OGPU_HOME"
OUTAGE_ENV = "PREFECT_INTEGRATIONS_OGPU_RPC_OUTAGE_S"
ANVIL_ENV = "PREFECT_INTEGRATIONS_OGPU_ANVIL"
BLOCK_PREFIX = {"OGPUNetwork": "ogpu-network", "OGPUWallet": "ogpu-wallet", "OGPUStorage": "ogpu-storage"}
"""`--network ogpu-network/NAME` (and `ogpu-wallet/`, `ogpu-storage/`) names a saved block even where
NAME is also a keyword (devnet, mainnet, testnet) or a devnet role: the blocks' type slugs."""
DEFAULTS: dict[str, Any] = {"home": Path(".ogpu"), "rpc_outage_s": 60.0, "anvil": None}
"""OGPUSettings' defaults (tests/test_cli.py checks they agree): loading Prefect's settings costs
seconds per command, so it is done only where something configures this integration."""
_MENTION = re.compile(r"integrations\.ogpu|integrations_ogpu_", re.IGNORECASE)


def command(
    group: Any, name: str, func: Callable[..., Any], *, help: str, role: str = "client", storage: bool = False
) -> argparse.ArgumentParser:
    """The subcommand `name` of `group`, running `func`, with the shared options (add_options)."""
    parser = group.add_parser(name, help=help)
    add_options(parser, role=role, storage=storage)
    parser.set_defaults(func=func)
    return parser


def add_options(parser: argparse.ArgumentParser, *, role: str = "client", storage: bool = False) -> None:
    """The network, signer (and, where payloads are written, storage) options, and `--json`."""
    g = parser.add_argument_group("network and signer")
    g.add_argument(
        "--network",
        metavar="NAME",
        help="devnet (default: the running `ogpu-prefect devnet up`), mainnet, testnet, "
        "a saved OGPUNetwork block, or a profile JSON file",
    )
    g.add_argument("--rpc-url", metavar="URL", help="use this JSON-RPC endpoint instead of the network's")
    who = g.add_mutually_exclusive_group()
    who.add_argument("--wallet", metavar="NAME", help=f"a devnet role (default: {role}) or a saved OGPUWallet block")
    who.add_argument("--key-env", metavar="VAR", help="read the private key from this environment variable")
    who.add_argument("--key-file", metavar="PATH", help="read the private key from this file (mode 600)")
    if storage:
        g.add_argument(
            "--storage",
            metavar="NAME",
            help="a saved OGPUStorage block for payloads (default on a devnet: the payloads folder beside its profile)",
        )
    parser.add_argument("--json", action="store_true", help="print exactly one JSON object")
    parser.set_defaults(default_role=role)


def _configured_in_files() -> bool:
    """Whether a settings file Prefect reads (.env, prefect.toml, pyproject.toml, the profiles
    file) sets anything of this integration."""
    prefect_home = Path(os.environ.get("PREFECT_HOME", "~/.prefect")).expanduser()
    for path in (Path(".env"), Path("prefect.toml"), Path("pyproject.toml"), prefect_home / "profiles.toml"):
        try:
            if _MENTION.search(path.read_text(errors="replace")):
                return True
        except OSError:
            continue
    return False


def _setting(name: str, env: str, parse: Callable[[str], Any]) -> Any:
    """A setting: its environment variable (which wins over every other source), else Prefect's
    settings where a settings file configures this integration, else the default."""
    value = os.environ.get(env)
    if value is not None:
        try:
            return parse(value)
        except ValueError:
            pass  # Prefect's settings report it, naming the variable
    if value is not None or _configured_in_files():
        from ..settings import get_settings

        return getattr(get_settings(), name)
    return DEFAULTS[name]


def home() -> Path:
    """The `home` setting: where `devnet up` keeps its profile."""
    return Path(_setting("home", HOME_ENV, Path))


def anvil() -> str | None:
    """The `anvil` setting: the anvil binary `devnet up` starts (None: devnet.find_anvil looks)."""
    return _setting("anvil", ANVIL_ENV, str)


def rpc_outage_s() -> float:
    return float(_setting("rpc_outage_s", OUTAGE_ENV, float))


def running_devnet() -> dict[str, Any] | None:
    """The profile of the devnet `devnet up` started, if it answers (as devnet.read_profile, with
    the home folder read as above)."""
    from ..chain.devnet import read_profile
    from ..chain.network import profile_path

    return read_profile(profile_path(home()))


def _profile_file(path: Path) -> dict[str, Any]:
    from ..chain.errors import InvalidInputError
    from ..chain.network import Network

    try:
        profile = json.loads(path.read_text())
        Network.from_profile(profile)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise InvalidInputError(
            "--network", f"{path} is not a network profile (rpc_url, chain_id, contracts): {type(e).__name__}"
        ) from None
    return profile  # type: ignore[no-any-return]


def load_block(kind: str, name: str, option: str) -> Any:
    """The saved block `name` of `kind` (OGPUNetwork, OGPUWallet, OGPUStorage); InvalidInputError
    naming `option` when nothing is saved under it."""
    from .. import blocks
    from ..chain.errors import InvalidInputError, OGPUError
    from ..prefect_api import require_api

    cls = getattr(blocks, kind)
    name = name.removeprefix(f"{BLOCK_PREFIX[kind]}/")  # `ogpu-network/devnet`: a block, whatever its name
    require_api(f"{option} {name}")  # a saved block lives in a Prefect API: never a temporary one
    try:
        return cls.load(name)
    except ValueError:
        raise InvalidInputError(option, f"no {kind} block named {name!r} is saved") from None
    except Exception as e:  # the Prefect API is unreachable or refused: one line, not a traceback
        raise OGPUError(f"{option}: could not load the {kind} block {name!r}: {type(e).__name__}: {e}") from None


@dataclass
class Context:
    """The resolved network (and its profile, when it came from one) and the signer's flags."""

    args: argparse.Namespace
    network: Network
    profile: dict[str, Any] | None = None
    _chain: Chain | None = field(default=None, repr=False)
    _signer: Any = field(default=None, repr=False)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Context:
        from ..chain.errors import InvalidInputError
        from ..chain.network import PRESETS, Network
        from ..validation import check_name, check_url

        name = check_name("--network", args.network, optional=True)
        profile: dict[str, Any] | None = None
        if name is not None and name.startswith(f"{BLOCK_PREFIX['OGPUNetwork']}/"):
            network = load_block("OGPUNetwork", name, "--network").to_network()
        elif name is None or name == "devnet":
            profile = running_devnet()
            if profile is None:
                raise InvalidInputError(
                    "--network",
                    f"no devnet is running (no answering profile in {home()}): start one with "
                    f"`ogpu-prefect devnet up`, or name a network (mainnet, testnet, a saved OGPUNetwork block)",
                )
            network = Network.from_profile(profile)
        elif name in PRESETS:
            network = PRESETS[name]
        elif name.endswith(".json") or Path(name).is_file():
            profile = _profile_file(Path(name))
            network = Network.from_profile(profile)
        else:
            network = load_block("OGPUNetwork", name, "--network").to_network()
        if args.rpc_url is not None:
            network = network.with_rpc(check_url("--rpc-url", args.rpc_url, ("http", "https")))
        return cls(args, network, profile)

    @property
    def chain(self) -> Chain:
        if self._chain is None:
            from ..chain.connection import Chain

            self._chain = Chain(self.network, outage_s=rpc_outage_s())
        return self._chain

    def _role(self) -> str | None:
        """The wallet named, or on a profile the command's default role."""
        from ..validation import check_name

        wallet = check_name("--wallet", self.args.wallet, optional=True)
        if wallet is None and self.profile is not None and not (self.args.key_env or self.args.key_file):
            return str(self.args.default_role)
        return wallet

    def _profile_account(self, role: str | None) -> dict[str, str] | None:
        accounts = (self.profile or {}).get("accounts") or {}
        return accounts.get(role) if role else None

    def address(self) -> str:
        """The signer's address (a profile role's without touching its key)."""
        account = self._profile_account(self._role())
        return str(account["address"]) if account else str(self.signer().address)

    def signer(self) -> Any:
        """The signer the flags name. A key is read from the environment or a file only, and is
        never echoed."""
        if self._signer is None:
            self._signer = self._resolve_signer()
        return self._signer

    def _resolve_signer(self) -> Any:
        from ..chain.errors import InvalidInputError
        from ..validation import check_name

        a = self.args
        if a.key_env:
            var = check_name("--key-env", a.key_env)
            value = os.environ.get(var, "")
            if not value.strip():
                raise InvalidInputError("--key-env", f"${var} is not set")
            return _signer_from("--key-env", value, f"${var}")
        if a.key_file:
            path = Path(check_name("--key-file", a.key_file))
            try:
                value = path.read_text()
                mode = path.stat().st_mode
            except OSError as e:
                raise InvalidInputError("--key-file", f"cannot read {path}: {e.strerror}") from None
            if mode & 0o077:
                note(f"warning: {path} holds a private key and others may read it (chmod 600 {path})")
            return _signer_from("--key-file", value, str(path))
        role = self._role()
        if role is None:
            raise InvalidInputError(
                "--wallet", f"{self.network.name} needs a signer: --wallet BLOCK, --key-env VAR or --key-file PATH"
            )
        account = self._profile_account(role)
        if account is not None:
            return _signer_from("--wallet", account["private_key"], f"the profile's {role}")
        return load_block("OGPUWallet", role, "--wallet").signer()

    def client(self, *, storage: bool = False) -> OGPUClient:
        """An OGPUClient for the signer; with `storage`, writing payloads where `store()` says."""
        from ..client import OGPUClient

        if not storage:
            return OGPUClient(self.chain, self.signer())
        store, origins = self.store()
        return OGPUClient(self.chain, self.signer(), store, trusted_origins=origins)

    def store(self) -> tuple[Any, list[str]]:
        """(payload store, URL prefixes its payloads are read from): `--storage`'s block, else on
        a devnet its payloads folder (file:// URLs: for providers on this machine)."""
        from ..chain.errors import InvalidInputError
        from ..validation import check_name

        name = check_name("--storage", getattr(self.args, "storage", None), optional=True)
        if name is not None:
            block = load_block("OGPUStorage", name, "--storage")
            return block.store(), list(block.trusted_origins())
        if self.profile is None:
            raise InvalidInputError(
                "--storage", f"{self.network.name} needs a storage for payloads: a saved OGPUStorage block's name"
            )
        from ..storage import FsspecStore

        root = (home() / "payloads").resolve()
        url = f"file://{root}"
        return FsspecStore(url), [url]


_DECORATED_KEY = r"""\s*(?:export\s+)?(?:[A-Za-z_]\w*\s*[=:]\s*)?(["']?)((?:0[xX])?[0-9a-fA-F]{64})\1\s*,?\s*"""


def _signer_from(option: str, value: str, where: str) -> Any:
    """A Signer from a key as people keep it: bare, `0x`/`0X`, quoted, `NAME=...` (a .env line),
    with a trailing comma. Exactly 64 hex digits: a key with one missing signs for another account."""
    import re

    from ..chain.errors import InvalidInputError
    from ..chain.signing import Signer

    found = re.fullmatch(_DECORATED_KEY, value)
    try:
        return Signer(found.group(2)[-64:] if found else value.strip())
    except ValueError:
        raise InvalidInputError(option, f"{where} does not hold a private key (64 hex digits)") from None


def context(args: argparse.Namespace) -> Context:
    return Context.from_args(args)
