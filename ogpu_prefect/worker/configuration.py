"""The `ogpu-provider` work pool's job variables: what a provider worker runs with.

The wallet, network and storage are block-typed, so the pool's form shows a block picker for each
(the pool stores a `{"$ref": {"block_document_id": ...}}` reference, which the worker resolves). A
fresh pool has none set: the worker refuses to start until they are, with one line naming the
variable (`JobVariableError`). Bounds, address patterns and the installed backends and task policies
are part of the variables' JSON schema, so Prefect's server refuses a pool created with defaults
that break them, and the UI's form refuses such values before it saves; Prefect (3.9) does not check
an update made through the API or the CLI, so the worker checks its pool's values again when it
starts (`ProviderJobConfiguration.for_worker`: one line naming the variable).

Prefect's base fields (`command`, `env`, `labels`, `name`) have no use in a provider worker (it runs
no flow-run command) and are left out of the pool's form. Pools created before the block-typed
variables name their blocks (`network_block`, `wallet_block`, `storage_block`): still accepted."""

from __future__ import annotations

from typing import Any, Literal

from prefect.workers.base import BaseJobConfiguration, BaseVariables
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.json_schema import SkipJsonSchema

from ..blocks import OGPUNetwork, OGPUStorage, OGPUWallet, load_block
from ..chain.errors import InvalidInputError
from ..validation import check_address, check_name, check_plugin_options, check_url, plugin_class, refuse_secret

ADDRESS_PATTERN = r"^0x[0-9a-fA-F]{40}$"
ADDRESS_LIST = {"items": {"type": "string", "pattern": ADDRESS_PATTERN}}
EXAMPLE_SOURCE = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
EXAMPLE_PROVIDER = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"
BLOCKS = {"wallet": OGPUWallet, "network": OGPUNetwork, "storage": OGPUStorage}
"""The block-typed variables, in the order a worker needs them."""


class JobVariableError(InvalidInputError, SystemExit):
    """A job variable a provider worker cannot start without is not set (or names no saved block).

    An `InvalidInputError` naming the variable, and a `SystemExit` too: Prefect's CLI prints a
    traceback for any other exception, so `prefect worker start` ends with this one line instead
    (exit code 1). `except Exception` catches it; uncaught in an asyncio task it ends the event
    loop, so it is raised only while a worker starts (in its main task), never for a flow run."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(field, message)
        self.code = f"ogpu-provider worker: {self}"


def _installed(kind: str) -> list[str]:
    from ..plugin_manager import PluginKind, installed

    try:
        return sorted(installed(PluginKind.HARDWARE_BACKEND if kind == "backend" else PluginKind.TASK_POLICY))
    except Exception:  # a broken third-party plugin must not break the schema
        return []


def _enum(kind: str) -> dict[str, Any]:
    installed = _installed(kind)
    return {"enum": installed} if installed else {}


class _Checks(BaseModel):
    """Validators shared by the job configuration and the variables."""

    model_config = ConfigDict(hide_input_in_errors=True)  # a key pasted into a field is never echoed

    @field_validator("sources", "providers", "leave_sources", check_fields=False)
    @classmethod
    def _addresses(cls, value: list[str], info: Any) -> list[str]:
        return [check_address(f"{info.field_name}[{i}]", s) for i, s in enumerate(value)]

    @field_validator("backend", "task_policy", check_fields=False)
    @classmethod
    def _plugin(cls, value: str, info: Any) -> str:
        check_name(info.field_name, value)  # a key is refused before the message below could show it
        installed = _installed("backend" if info.field_name == "backend" else "policy")
        if installed and value not in installed:
            raise ValueError(f"{value!r} is not installed; installed: {', '.join(installed)}")
        return value

    @field_validator("network_block", "wallet_block", "storage_block", check_fields=False)
    @classmethod
    def _block_name(cls, value: str | None, info: Any) -> str | None:
        return check_name(info.field_name, value, optional=True)

    @field_validator("backend_options", "task_policy_options", check_fields=False)
    @classmethod
    def _options(cls, value: dict[str, Any], info: Any) -> dict[str, Any]:
        """Checked against the chosen plugin's constructor when the pool's values are saved
        (with_defaults, the variables model) and when a worker starts, not at its first task."""
        refuse_secret(info.field_name, value)  # keys go in an OGPUWallet block, not in a pool's variables
        backend = info.field_name == "backend_options"
        name = info.data.get("backend" if backend else "task_policy")
        if name is None or name not in _installed("backend" if backend else "policy"):
            return value  # the plugin's own field is refused (or a broken install: checked at start)
        from ..plugin_manager import PluginKind

        plugin = plugin_class(info.field_name, PluginKind.HARDWARE_BACKEND if backend else PluginKind.TASK_POLICY, name)
        options = check_plugin_options(info.field_name, plugin, value, reserved=("owner",) if backend else ())
        if not backend:  # a policy is a cheap value: its own checks (ranges) run now too
            try:
                plugin(**options)
            except (TypeError, ValueError) as e:
                raise InvalidInputError(info.field_name, str(e)) from None
        return options

    @field_validator("max_concurrent_tasks", "stake_wei", "lookback_blocks", mode="before", check_fields=False)
    @classmethod
    def _not_bool(cls, value: Any, info: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError(f"{info.field_name}: expected an integer, not a bool")
        return value


class _Fields(_Checks):
    """The job variables, defined once for the pool's form (ProviderVariables) and for what a
    worker runs with (ProviderJobConfiguration). Each one's description is its docstring."""

    model_config = ConfigDict(hide_input_in_errors=True, use_attribute_docstrings=True)

    # Prefect's base fields: a provider worker runs no flow-run command, so they stay out of the form.
    command: SkipJsonSchema[str | None] = None
    env: SkipJsonSchema[dict[str, str | None]] = Field(default_factory=dict)
    labels: SkipJsonSchema[dict[str, str]] = Field(default_factory=dict)
    name: SkipJsonSchema[str | None] = None

    wallet: OGPUWallet | None = Field(None, title="Wallet")
    """The provider's key (an OpenGPU Wallet block): it locks the stake, registers to the sources,
    attempts tasks and signs their responses. Required. One key runs in one worker at a time; a
    machine can use its own with PREFECT_INTEGRATIONS_OGPU_PROVIDER_WALLET_BLOCK. With `providers`
    set, the key of an agent of their master (or the master's own)."""
    network: OGPUNetwork | None = Field(None, title="Network")
    """The OpenGPU network to serve (an OpenGPU Network block: RPC URL, chain id, contract
    addresses). Required."""
    storage: OGPUStorage | None = Field(None, title="Result storage")
    """Where responses are written (an OpenGPU Payload Storage block), readable by the tasks'
    clients. Required."""
    sources: list[str] = Field(
        default_factory=list, title="Sources", examples=[[EXAMPLE_SOURCE]], json_schema_extra=ADDRESS_LIST
    )
    """Addresses of the sources this fleet serves (0x-prefixed, 20 bytes)."""
    providers: list[str] = Field(
        default_factory=list,
        title="Providers (agent mode)",
        examples=[[EXAMPLE_PROVIDER]],
        json_schema_extra=ADDRESS_LIST,
    )
    """A master's providers this pool serves, its wallet being an agent of the master (or the master
    itself): each worker registers, attempts and answers as one of them (the only one listed, or
    PREFECT_INTEGRATIONS_OGPU_PROVIDER_ADDRESS on its machine). Empty: the wallet is the provider."""
    environment: Literal["cpu", "nvidia", "amd"] = Field("cpu", title="Environment", examples=["nvidia"])
    """Hardware environment registered on chain and used to pick each source's compose file."""
    backend: str = Field("local", title="Hardware backend", examples=["docker"], json_schema_extra=_enum("backend"))
    """Hardware backend plugin that runs the sources' services: `local` (processes), `docker`, or
    any installed one."""
    backend_options: dict[str, Any] = Field(
        default_factory=dict, title="Backend options", examples=[{"build": False, "startup_timeout_s": 300}]
    )
    """Options for the hardware backend (docker: `build`; any: `startup_timeout_s`). No secrets."""
    max_concurrent_tasks: int = Field(8, ge=1, le=1024, title="Concurrent tasks", examples=[16])
    """Tasks this worker attempts and runs at once (1 to 1024)."""
    task_policy: str = Field("take_all", title="Task policy", examples=["threshold"], json_schema_extra=_enum("policy"))
    """Task policy plugin: which tasks to take, at what price."""
    task_policy_options: dict[str, Any] = Field(
        default_factory=dict, title="Task policy options", examples=[{"min_payment": 10**16, "min_seconds_left": 30}]
    )
    """Options for the task policy (threshold: `min_payment`, `min_seconds_left`, `price_fraction`)."""
    stake_wei: int | None = Field(None, ge=0, title="Stake (wei)", examples=[10**18])
    """Stake kept locked in the Vault, in wei. Empty: what the sources require."""
    max_runtime_s: float | None = Field(None, gt=0, allow_inf_nan=False, title="Longest run (s)", examples=[600])
    """Longest a task may run, in seconds (never past the task's expiry). Empty: until the expiry."""
    idle_timeout_s: float = Field(300.0, gt=0, allow_inf_nan=False, title="Idle timeout (s)", examples=[900])
    """Seconds a source's service stays warm without tasks before it is stopped."""
    warm_on_start: bool = Field(True, title="Warm on start")
    """Start the sources' services when the worker starts (the first task finds them warm), not on
    their first task."""
    records: Literal["tasks", "summary", "flow_runs"] = Field("tasks", title="Records", examples=["summary"])
    """How tasks appear in Prefect. `tasks`: a flow run per source service session, each task a
    task run in it with the chain's attempt and response times. `summary`: the session's flow run
    and its table of tasks only (fewest writes). `flow_runs`: a flow run per task (Cancel or Retry
    one task; its times are those of the writes, not the chain's)."""
    poll_interval_s: float = Field(
        0.25, gt=0, le=60, allow_inf_nan=False, title="Chain poll interval (s)", examples=[1.0]
    )
    """Seconds between chain polls for new tasks (above 0, at most 60)."""
    lookback_blocks: int = Field(10_000, ge=0, title="Lookback (blocks)", examples=[50_000])
    """Blocks scanned back on start, for tasks published while the worker was down."""
    leave_sources: list[str] = Field(
        default_factory=list, title="Leave sources", examples=[[EXAMPLE_SOURCE]], json_schema_extra=ADDRESS_LIST
    )
    """Sources the provider unregisters from when the worker starts (Nexus.unregister; nothing is
    sent for one it is not registered to). Move a source here from `sources` to stop serving it;
    the stake stays locked until `ogpu-prefect vault unbond`."""
    report_hardware: bool = Field(True, title="Report hardware")
    """Publish this machine's hardware (CPU, memory, GPUs) as the provider's base data on the
    Terminal when the worker starts: one transaction, none while it is unchanged."""
    live_data_interval_s: float | None = Field(
        None, ge=10, allow_inf_nan=False, title="Live data interval (s)", examples=[600]
    )
    """Publish the provider's live data (tasks running, load, free memory) on the Terminal this often;
    each is a transaction. Empty: never."""

    config_origins: list[str] = Field(
        default_factory=list,
        title="Config origins",
        examples=[["https://cipfs.ogpuscan.io/ipfs/", "http://10.0.0.5:8080/payloads/"]],
    )
    """URL prefixes task configs and source metadata may be read from: a config URL is chosen by
    the task's client, so any other is refused unread. A loopback or private address is read only
    where a prefix names it. Empty: the result storage's read URL and the network's IPFS gateway."""

    @field_validator("config_origins")
    @classmethod
    def _config_origins(cls, value: list[str]) -> list[str]:
        return [check_url(f"config_origins[{i}]", u) for i, u in enumerate(value)]

    # Pools created before the block-typed variables name their blocks; the wallet's name can also
    # come from the PREFECT_INTEGRATIONS_OGPU_PROVIDER_WALLET_BLOCK setting. A name wins over a block.
    network_block: SkipJsonSchema[str | None] = None
    wallet_block: SkipJsonSchema[str | None] = None
    storage_block: SkipJsonSchema[str | None] = None


class ProviderJobConfiguration(_Fields, BaseJobConfiguration):
    """What an `ogpu-provider` worker runs with (its pool's job variables)."""

    @classmethod
    async def for_worker(cls, base_job_template: dict[str, Any], client: Any) -> ProviderJobConfiguration:
        """A starting worker's configuration: its pool's values, checked. Prefect's server checks a
        pool's defaults when the pool is created, not when it is updated (Prefect 3.9), so a bad
        value stops `prefect worker start` here, with one line naming it (JobVariableError)."""
        try:
            return await cls.from_template_and_values(base_job_template, {}, client=client)
        except ValidationError as e:
            errors = [(".".join(str(p) for p in x["loc"]) or "job variables", x["msg"]) for x in e.errors()]
            details = "; ".join(f"{loc}: {msg}" for loc, msg in errors)
            raise JobVariableError(errors[0][0], f"the work pool's value is refused ({details})") from None

    def acting_for(self, signer: str) -> str | None:
        """The provider this worker acts for when its wallet (`signer`) is an agent or a master: the
        pool's only `providers` entry, or the one PREFECT_INTEGRATIONS_OGPU_PROVIDER_ADDRESS names.
        None: the wallet is the provider. A choice that cannot be made raises JobVariableError."""
        from ..settings import get_settings

        chosen = get_settings().provider_address
        listed = {p.lower(): p for p in self.providers}
        if chosen is not None:
            address = check_address("PREFECT_INTEGRATIONS_OGPU_PROVIDER_ADDRESS", chosen)
            if address.lower() not in listed:
                raise JobVariableError(
                    "providers",
                    f"PREFECT_INTEGRATIONS_OGPU_PROVIDER_ADDRESS is {address}, which the work pool's "
                    f"`providers` does not list ({', '.join(self.providers) or 'empty'})",
                )
        elif len(listed) > 1:
            raise JobVariableError(
                "providers",
                f"lists {len(listed)} providers: set PREFECT_INTEGRATIONS_OGPU_PROVIDER_ADDRESS on this "
                "machine to the one its worker serves",
            )
        else:
            address = next(iter(listed.values()), None)
        return None if address is None or address.lower() == signer.lower() else address

    def blocks(self) -> tuple[OGPUWallet, OGPUNetwork, OGPUStorage]:
        """The wallet, network and storage blocks: a name (`wallet_block`, ...) is loaded, a block
        the pool references is used as it is. Blocking (loads by name): call it from a thread.
        Raises JobVariableError naming the variable when one is not set or names no saved block
        (checked before anything is loaded)."""

        unset = [v for v in BLOCKS if getattr(self, f"{v}_block") is None and getattr(self, v) is None]
        if unset:
            variable, cls = unset[0], BLOCKS[unset[0]]
            also = (
                " (or PREFECT_INTEGRATIONS_OGPU_PROVIDER_WALLET_BLOCK on this machine)" if variable == "wallet" else ""
            )
            others = f"; not set either: {', '.join(unset[1:])}" if unset[1:] else ""
            raise JobVariableError(
                variable,
                f"not set: choose an {cls.__name__} block for the work pool's `{variable}` job variable{also}{others}",
            )
        found: list[Any] = []
        for variable, cls in BLOCKS.items():
            name = getattr(self, f"{variable}_block")
            try:
                found.append(getattr(self, variable) if name is None else load_block(cls, name, f"{variable}_block"))
            except InvalidInputError as e:
                raise JobVariableError(e.field, str(e).partition(": ")[2]) from None
        return found[0], found[1], found[2]


class ProviderVariables(_Fields, BaseVariables):
    """The job variables of an `ogpu-provider` work pool, shown in its form in the UI."""

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        schema = super().model_json_schema(*args, **kwargs)
        for prop in schema["properties"].values():
            if "description" in prop:  # one paragraph, not the docstring's line breaks
                prop["description"] = " ".join(prop["description"].split())
            # An optional variable is shown as its type alone, no default (a block: its picker, as
            # prefect-docker's registry credentials), not as a "<type> | null" choice: unset is None.
            kinds = prop.get("anyOf", [])
            if len(kinds) == 2 and {"type": "null"} in kinds and prop.get("default", 0) is None:
                (kind,) = [k for k in prop.pop("anyOf") if k != {"type": "null"}]
                prop.update({"allOf": [kind]} if "$ref" in kind else kind)
                del prop["default"]
        titles = {cls.get_block_type_slug(): cls.get_block_type_name() for cls in BLOCKS.values()}
        for block in schema.get("definitions", {}).values():
            block["title"] = titles.get(block.get("block_type_slug"), block.get("title"))  # "OpenGPU Wallet"
            for secret in block.get("secret_fields", []):
                field, _, rest = secret.partition(".")
                if rest == "*" and field in block.get("properties", {}):
                    # Prefect's server checks a pool's defaults with the referenced blocks' secrets
                    # obfuscated, and an empty secret dict (OGPUStorage.storage_options) becomes the
                    # string "********": the dict's type is left to the block's own validation.
                    block["properties"][field].pop("type", None)
                    block["properties"][field].pop("additionalProperties", None)
        return schema


def with_defaults(template: dict[str, Any], **values: Any) -> dict[str, Any]:
    """`template` (a pool's base job template, e.g. `OGPUProviderWorker.get_default_base_job_template()`)
    with `values` as its variables' defaults, checked as the pool's form would; a saved block
    becomes the reference the form's block picker shows (`{"$ref": {"block_document_id": ...}}`)."""
    ProviderVariables(**values)
    props = template["variables"]["properties"]
    for key, value in values.items():
        if key not in props:
            raise InvalidInputError(key, f"not a job variable of this template ({', '.join(props)})")
        if isinstance(value, tuple(BLOCKS.values())):
            from ..prefect_compat import block_reference

            value = block_reference(value)
            if value is None:
                raise InvalidInputError(key, "save the block first: a pool references saved blocks")
        props[key]["default"] = value
    return template
