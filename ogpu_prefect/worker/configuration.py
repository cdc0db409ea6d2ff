"""The `ogpu-provider` work pool's job variables: what a provider worker runs with.

Bounds, address patterns and the installed backends and task policies are part of the variables'
JSON schema, so Prefect's UI and API check a pool's values when it is created or edited, and the
worker checks them again when it loads them (typed errors naming the variable)."""

from __future__ import annotations

from typing import Any, Literal

from prefect.workers.base import BaseJobConfiguration, BaseVariables
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..validation import check_address

ADDRESS_PATTERN = r"^0x[0-9a-fA-F]{40}$"


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
        installed = _installed("backend" if info.field_name == "backend" else "policy")
        if installed and value not in installed:
            raise ValueError(f"{value!r} is not installed; installed: {', '.join(installed)}")
        return value


class ProviderJobConfiguration(_Checks, BaseJobConfiguration):
    """What an `ogpu-provider` worker runs with (its pool's job variables)."""

    network_block: str = Field(default="devnet")
    wallet_block: str = Field(default="provider")
    storage_block: str = Field(default="devnet")
    sources: list[str] = Field(default_factory=list)
    environment: Literal["cpu", "nvidia", "amd"] = Field(default="cpu")
    backend: str = Field(default="local")
    backend_options: dict[str, Any] = Field(default_factory=dict)
    max_concurrent_tasks: int = Field(default=8, ge=1, le=1024)
    task_policy: str = Field(default="take_all")
    task_policy_options: dict[str, Any] = Field(default_factory=dict)
    stake_wei: int | None = Field(default=None, ge=0)
    max_runtime_s: float | None = Field(default=None, gt=0)
    idle_timeout_s: float = Field(default=300.0, gt=0)
    warm_on_start: bool = Field(default=True)
    poll_interval_s: float = Field(default=0.25, gt=0, le=60)
    lookback_blocks: int = Field(default=10_000, ge=0)


class ProviderVariables(_Checks, BaseVariables):
    """The job variables of an `ogpu-provider` work pool, shown in its form in the UI."""

    network_block: str = Field(
        default="devnet", title="Network block", description="Name of the OGPUNetwork block (chain and contracts)."
    )
    wallet_block: str = Field(
        default="provider", title="Wallet block", description="Name of the OGPUWallet block: the provider's key."
    )
    storage_block: str = Field(
        default="devnet", title="Storage block", description="Name of the OGPUStorage block where results are written."
    )
    sources: list[str] = Field(
        default_factory=list,
        title="Sources",
        description="Addresses of the sources this fleet serves.",
        json_schema_extra={"items": {"type": "string", "pattern": ADDRESS_PATTERN}},
    )
    environment: Literal["cpu", "nvidia", "amd"] = Field(
        default="cpu",
        title="Environment",
        description="Hardware environment registered on chain and used to pick the compose file.",
    )
    backend: str = Field(
        default="local",
        title="Hardware backend",
        description="Hardware backend plugin that runs the services (local, docker, ...).",
        json_schema_extra=_enum("backend"),
    )
    backend_options: dict[str, Any] = Field(
        default_factory=dict, title="Backend options", description="Options for the hardware backend."
    )
    max_concurrent_tasks: int = Field(
        default=8, ge=1, le=1024, title="Concurrent tasks", description="Tasks this worker runs at once."
    )
    task_policy: str = Field(
        default="take_all",
        title="Task policy",
        description="Task policy plugin: which tasks to take, at what price.",
        json_schema_extra=_enum("policy"),
    )
    task_policy_options: dict[str, Any] = Field(
        default_factory=dict, title="Task policy options", description="Options for the task policy."
    )
    stake_wei: int | None = Field(
        default=None, ge=0, title="Stake (wei)", description="Stake to keep locked (default: what the sources require)."
    )
    max_runtime_s: float | None = Field(
        default=None,
        gt=0,
        title="Longest run (s)",
        description="Longest a task may run (it never runs past the task's expiry).",
    )
    idle_timeout_s: float = Field(
        default=300.0,
        gt=0,
        title="Idle timeout (s)",
        description="Seconds a source's service stays warm without tasks.",
    )
    warm_on_start: bool = Field(
        default=True,
        title="Warm on start",
        description="Start the sources' services when the worker starts, not on their first task.",
    )
    poll_interval_s: float = Field(
        default=0.25,
        gt=0,
        le=60,
        title="Chain poll interval (s)",
        description="Seconds between chain polls for new tasks.",
    )
    lookback_blocks: int = Field(
        default=10_000,
        ge=0,
        title="Lookback (blocks)",
        description="Blocks scanned back on start, for tasks published while the worker was down.",
    )
