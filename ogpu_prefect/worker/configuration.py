"""The `ogpu-provider` work pool's job variables: what a provider worker runs with.

Bounds, address patterns and the installed backends and task policies are part of the variables'
JSON schema, so Prefect's UI and API check a pool's values when it is created or edited, and the
worker checks them again when it loads them (typed errors naming the variable)."""

from __future__ import annotations

from typing import Any, Literal

from prefect.workers.base import BaseJobConfiguration, BaseVariables
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..validation import check_address, check_name, refuse_secret

ADDRESS_PATTERN = r"^0x[0-9a-fA-F]{40}$"
ADDRESS_LIST = {"items": {"type": "string", "pattern": ADDRESS_PATTERN}}


def _installed(kind: str) -> list[str]:
    from ..plugin_manager import hardware_backends, task_policies

    try:
        return sorted(hardware_backends() if kind == "backend" else task_policies())
    except Exception:  # a broken third-party plugin must not break the schema
        return []


def _enum(kind: str) -> dict[str, Any]:
    installed = _installed(kind)
    return {"enum": installed} if installed else {}


class _Checks(BaseModel):
    """Validators shared by the job configuration and the variables."""

    model_config = ConfigDict(hide_input_in_errors=True)  # a key pasted into a field is never echoed

    @field_validator("sources", check_fields=False)
    @classmethod
    def _sources(cls, value: list[str]) -> list[str]:
        return [check_address(f"sources[{i}]", s) for i, s in enumerate(value)]

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
    def _block_name(cls, value: str, info: Any) -> str:
        return check_name(info.field_name, value)

    @field_validator("backend_options", "task_policy_options", check_fields=False)
    @classmethod
    def _options(cls, value: dict[str, Any], info: Any) -> dict[str, Any]:
        refuse_secret(info.field_name, value)  # keys go in an OGPUWallet block, not in a pool's variables
        return value

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

    network_block: str = Field("devnet", title="Network block")
    """Name of the OGPUNetwork block (chain and contracts)."""
    wallet_block: str = Field("provider", title="Wallet block")
    """Name of the OGPUWallet block: the provider's key."""
    storage_block: str = Field("devnet", title="Storage block")
    """Name of the OGPUStorage block where results are written."""
    sources: list[str] = Field(default_factory=list, json_schema_extra=ADDRESS_LIST)
    """Addresses of the sources this fleet serves."""
    environment: Literal["cpu", "nvidia", "amd"] = Field("cpu", title="Environment")
    """Hardware environment registered on chain and used to pick the compose file."""
    backend: str = Field("local", title="Hardware backend", json_schema_extra=_enum("backend"))
    """Hardware backend plugin that runs the services (local, docker, ...)."""
    backend_options: dict[str, Any] = Field(default_factory=dict, title="Backend options")
    """Options for the hardware backend (e.g. docker: `{"build": false}`; any: `startup_timeout_s`)."""
    max_concurrent_tasks: int = Field(8, ge=1, le=1024, title="Concurrent tasks")
    """Tasks this worker runs at once."""
    task_policy: str = Field("take_all", title="Task policy", json_schema_extra=_enum("policy"))
    """Task policy plugin: which tasks to take, at what price."""
    task_policy_options: dict[str, Any] = Field(default_factory=dict, title="Task policy options")
    """Options for the task policy (threshold: `min_payment`, `min_seconds_left`, `price_fraction`)."""
    stake_wei: int | None = Field(None, ge=0, title="Stake (wei)")
    """Stake to keep locked (default: what the sources require)."""
    max_runtime_s: float | None = Field(None, gt=0, allow_inf_nan=False, title="Longest run (s)")
    """Longest a task may run (it never runs past the task's expiry)."""
    idle_timeout_s: float = Field(300.0, gt=0, allow_inf_nan=False, title="Idle timeout (s)")
    """Seconds a source's service stays warm without tasks."""
    warm_on_start: bool = Field(True, title="Warm on start")
    """Start the sources' services when the worker starts, not on their first task."""
    poll_interval_s: float = Field(0.25, gt=0, le=60, allow_inf_nan=False, title="Chain poll interval (s)")
    """Seconds between chain polls for new tasks."""
    lookback_blocks: int = Field(10_000, ge=0, title="Lookback (blocks)")
    """Blocks scanned back on start, for tasks published while the worker was down."""


class ProviderJobConfiguration(_Fields, BaseJobConfiguration):
    """What an `ogpu-provider` worker runs with (its pool's job variables)."""


class ProviderVariables(_Fields, BaseVariables):
    """The job variables of an `ogpu-provider` work pool, shown in its form in the UI."""
