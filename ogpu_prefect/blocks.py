"""Prefect blocks: where the protocol is (OGPUNetwork), who signs (OGPUWallet), and where payloads
live (OGPUStorage). Registered with Prefect through the `prefect.collections` entry point."""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from prefect.blocks.core import Block
from prefect.types import SecretDict
from pydantic import ConfigDict, Field, SecretStr, field_validator

from .chain.errors import InvalidInputError
from .chain.network import MAINNET, TESTNET, Network
from .prefect_api import require_api
from .validation import check_address, check_name, check_url, refuse_secret

DOCS = "https://github.com/ogpu-prefect/ogpu-prefect/tree/main/docs"


class OGPUNetwork(Block):
    """An OpenGPU deployment: RPC endpoint, chain id and the protocol's contract addresses.

    Example:
        ```python
        from ogpu_prefect.blocks import OGPUNetwork
        network = OGPUNetwork.load("BLOCK_NAME")
        chain = network.connect()
        ```
    """

    model_config = ConfigDict(hide_input_in_errors=True)  # a key pasted into a field is never echoed
    _block_type_name = "OpenGPU Network"
    _block_type_slug = "ogpu-network"
    _description = "An OpenGPU deployment: RPC URL, chain id and the Nexus, Controller, Terminal and Vault addresses."
    _documentation_url = f"{DOCS}/blocks.md#ogpunetwork"

    name: str = Field(default="devnet", description="A label for this network (devnet, mainnet, testnet, ...).")
    rpc_url: str = Field(description="JSON-RPC endpoint of the chain.")
    chain_id: int = Field(gt=0, description="EIP-155 chain id (31337 devnet, 1071 mainnet).")
    nexus: str = Field(description="Nexus contract address.")
    controller: str = Field(description="Controller contract address.")
    terminal: str = Field(description="Terminal contract address.")
    vault: str = Field(description="Vault contract address.")
    manager: str | None = Field(default=None, description="Manager contract address, where known.")
    rate_limit: float | None = Field(
        default=None,
        gt=0,
        description="The endpoint's limit in calls per second (each call in a batch counts), if it has one: "
        "every process paces its calls under it. Empty: no limit, but a node's HTTP 429 / -32005 still slows "
        "callers down.",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name("name", v)

    @field_validator("rpc_url")
    @classmethod
    def _rpc_url(cls, v: str) -> str:
        return check_url("rpc_url", v, ("http", "https"))

    @field_validator("chain_id", mode="before")
    @classmethod
    def _chain_id(cls, v: Any) -> Any:
        if isinstance(v, bool):
            raise ValueError("chain_id: expected an integer, not a bool")
        return v

    @field_validator("nexus", "controller", "terminal", "vault", "manager")
    @classmethod
    def _address(cls, v: str | None, info: Any) -> str | None:
        return None if v is None else check_address(info.field_name, v)

    def to_network(self) -> Network:
        return Network(
            self.name,
            self.rpc_url,
            self.chain_id,
            self.nexus,
            self.controller,
            self.terminal,
            self.vault,
            self.manager,
            self.rate_limit,
        )

    def connect(self, **rpc_options: Any) -> Any:
        """A `Chain` bound to this network; transport failures are retried for the `rpc_outage_s`
        setting (PREFECT_INTEGRATIONS_OGPU_RPC_OUTAGE_S) unless `outage_s` is given."""
        from .chain.connection import Chain
        from .settings import get_settings

        rpc_options.setdefault("outage_s", get_settings().rpc_outage_s)
        return Chain(self.to_network(), **rpc_options)

    @classmethod
    def from_network(cls, network: Network) -> OGPUNetwork:
        return cls(
            name=network.name,
            rpc_url=network.rpc_url,
            chain_id=network.chain_id,
            nexus=network.nexus,
            controller=network.controller,
            terminal=network.terminal,
            vault=network.vault,
            manager=network.manager,
            rate_limit=network.rate_limit,
        )

    @classmethod
    def devnet(cls, profile: dict[str, Any] | str | None = None) -> OGPUNetwork:
        """From a devnet profile: the dict, a path, or (None) the one `ogpu-prefect devnet up` wrote."""
        if profile is None:
            from .chain.network import profile_path
            from .settings import get_settings

            profile = str(profile_path(get_settings().home))
        return cls.from_network(Network.from_profile(profile))

    @classmethod
    def mainnet(cls, rpc_url: str | None = None) -> OGPUNetwork:
        return cls.from_network(MAINNET.with_rpc(rpc_url) if rpc_url else MAINNET)

    @classmethod
    def testnet(cls, rpc_url: str | None = None) -> OGPUNetwork:
        return cls.from_network(TESTNET.with_rpc(rpc_url) if rpc_url else TESTNET)


class OGPUWallet(Block):
    """An account that signs OpenGPU transactions. The key is a secret: never shown, logged,
    returned in results or put in an exception message.

    Example:
        ```python
        from ogpu_prefect.blocks import OGPUWallet
        wallet = OGPUWallet.load("BLOCK_NAME")
        print(wallet.address)
        ```
    """

    _block_type_name = "OpenGPU Wallet"
    _block_type_slug = "ogpu-wallet"
    _description = "A private key that signs OpenGPU transactions (client, provider, master or agent)."
    _documentation_url = f"{DOCS}/blocks.md#ogpuwallet"

    model_config = ConfigDict(hide_input_in_errors=True)  # a rejected key must not appear in the error

    private_key: SecretStr = Field(description="Hex private key (32 bytes, 0x-prefixed or not).")

    @field_validator("private_key")
    @classmethod
    def _valid_key(cls, v: SecretStr) -> SecretStr:
        from .chain.signing import Signer

        Signer(v)  # raises ValueError without echoing the key
        return v

    @property
    def address(self) -> str:
        return self.signer().address

    def signer(self) -> Any:
        """A `Signer` for this key."""
        from .chain.signing import Signer

        return Signer(self.private_key)

    def __repr__(self) -> str:
        return f"OGPUWallet(address={self.address})"

    def __reduce__(self) -> Any:
        """A saved wallet pickles to its name (loaded again on the other side); an unsaved one
        refuses, rather than put its key in clear into a pickle (process pools, Dask, results)."""
        name = getattr(self, "_block_document_name", None)
        if name and not getattr(self, "_is_anonymous", False):
            return (_load_wallet, (name,))
        raise TypeError(
            "an OGPUWallet holds a private key and is not pickled: save it as a block "
            "(wallet.save(name)); a saved one pickles to its name"
        )


def _load_wallet(name: str) -> OGPUWallet:
    return OGPUWallet.load(name)  # type: ignore[return-value]


class OGPUStorage(Block):
    """Where task inputs, source metadata and responses are written: an fsspec URL (file, memory,
    s3, ...) readable at `read_url`, or the OpenGPU IPFS upload API.

    Example:
        ```python
        from ogpu_prefect.blocks import OGPUStorage
        storage = OGPUStorage.load("BLOCK_NAME")
        url = storage.store().put_json({"hello": "world"})
        ```
    """

    _block_type_name = "OpenGPU Payload Storage"
    _block_type_slug = "ogpu-storage"
    model_config = ConfigDict(hide_input_in_errors=True)  # a key pasted into a field is never echoed
    _description = "Content-addressed JSON storage for OpenGPU payloads: fsspec, or the IPFS upload API."
    _documentation_url = f"{DOCS}/blocks.md#ogpustorage"

    kind: Literal["fsspec", "ipfs"] = Field(default="fsspec", description="fsspec URL storage, or the IPFS upload API.")
    write_url: str | None = Field(default=None, description="fsspec URL to write under (kind fsspec).")
    read_url: str | None = Field(
        default=None, description="URL prefix where providers read what is written (default: write_url)."
    )
    ipfs_api_url: str = Field(
        default="https://capi.ogpuscan.io/file/create", description="The IPFS upload endpoint (kind ipfs)."
    )
    storage_options: SecretDict = Field(
        default_factory=lambda: SecretDict({}),
        description="Extra fsspec options, credentials included (e.g. s3: `key`, `secret`): stored as a secret, "
        "never shown.",
    )
    result_origins: list[str] = Field(
        default_factory=list,
        description="URL prefixes providers' results may be read from, besides this storage's own read URL "
        "(and, for ipfs, the network's IPFS gateway). Anything else is refused unread.",
    )

    @field_validator("write_url")
    @classmethod
    def _write_url(cls, v: str | None) -> str | None:
        from .storage import check_write_url

        return None if v is None else check_write_url("write_url", v)

    @field_validator("read_url")
    @classmethod
    def _read_url(cls, v: str | None) -> str | None:
        return None if v is None else check_url("read_url", v)

    @field_validator("ipfs_api_url")
    @classmethod
    def _ipfs_api_url(cls, v: str) -> str:
        return check_url("ipfs_api_url", v, ("http", "https"))

    @field_validator("result_origins")
    @classmethod
    def _origins(cls, v: list[str]) -> list[str]:
        return [check_url(f"result_origins[{i}]", u) for i, u in enumerate(v)]

    def trusted_origins(self) -> list[str]:
        """The URL prefixes response payloads are read from (results elsewhere are refused)."""
        from .storage import IPFS_GATEWAY

        own = [IPFS_GATEWAY] if self.kind == "ipfs" else [u for u in (self.read_url or self.write_url,) if u]
        return [*own, *self.result_origins]

    def store(self) -> Any:
        """The PayloadStore this block describes."""
        from .storage import FsspecStore, IpfsStore

        if self.kind == "ipfs":
            return IpfsStore(self.ipfs_api_url)
        if not self.write_url:
            raise InvalidInputError("write_url", "required for fsspec storage")
        return FsspecStore(self.write_url, self.read_url, self.storage_options.get_secret_value())


B = TypeVar("B", OGPUNetwork, OGPUWallet, OGPUStorage)


def load_block(cls: type[B], value: Any, field: str) -> B:
    """`value` if it is a `cls` block; the saved block of that name if it is a name (or a block
    reference `{"$ref": {"block_document_id": ...}}`, as the run form stores it). Anything else,
    or a name nothing is saved under, raises InvalidInputError naming `field` (a key given here
    is refused without being echoed)."""
    if isinstance(value, cls):
        return value
    if isinstance(value, dict) and set(value) == {"$ref"}:  # a run form's block, as stored with the run
        refuse_secret(field, value)
        require_api(f"{field} (a saved block)")
        try:
            return cls.load_from_ref(value["$ref"])  # type: ignore[return-value]
        except (ValueError, TypeError):
            raise InvalidInputError(field, f"no {cls.__name__} block saved under {value['$ref']!r}") from None
    name = check_name(field, value)
    require_api(f"{field} {name!r}")  # a name is looked up in a Prefect API: never a temporary one
    try:
        return cls.load(name)  # type: ignore[return-value]
    except ValueError:
        raise InvalidInputError(field, f"no {cls.__name__} block named {name!r} is saved") from None
