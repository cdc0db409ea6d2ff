"""The typed values that go into and come out of the client tasks and flows."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .chain.errors import InvalidInputError
from .chain.types import DeliveryMethod, Environment, TaskStatus
from .delivery import Decision, ResponseView
from .validation import check_list, check_name, check_url, refuse_secret


class TaskInput(BaseModel):
    """One task's input, as the official SDK's `TaskInput`: the source's handler name and its input
    (`data`, passed to the handler as is), plus optional extra top-level keys."""

    model_config = ConfigDict(extra="allow", hide_input_in_errors=True)  # a rejected value may be a key

    function_name: str = Field(min_length=1)
    data: Any = Field(default_factory=dict)

    @field_validator("function_name")
    @classmethod
    def _no_key(cls, v: str) -> str:
        refuse_secret("function_name", v)
        return v

    @classmethod
    def coerce(cls, value: TaskInput | dict[str, Any], default_function: str | None = None) -> TaskInput:
        """A TaskInput, a `{"function_name", "data"}` dict, or (with `default_function`) any
        JSON-able value as `data`."""
        if isinstance(value, TaskInput):
            return value
        if isinstance(value, dict) and "function_name" in value:
            return cls.model_validate(value)
        if default_function is None:
            raise TypeError("an input must be a TaskInput or a dict with function_name (or pass function_name=)")
        return cls(function_name=default_function, data=value)

    def to_config(self, **marks: Any) -> dict[str, Any]:
        """The taskConfig JSON (PROTOCOL.md 6); `marks` are extra top-level keys."""
        return {**self.model_dump(), **marks}


def coerce_inputs(inputs: Any, function_name: str | None) -> list[TaskInput]:
    """Inputs as TaskInputs; typed errors name `inputs[i]` (a key among them is not echoed)."""
    if function_name is not None:
        check_name("function_name", function_name)
    items = []
    for i, x in enumerate(check_list("inputs", inputs)):
        refuse_secret(f"inputs[{i}]", x)
        try:
            items.append(TaskInput.coerce(x, function_name))
        except (TypeError, ValueError) as e:
            raise InvalidInputError(f"inputs[{i}]", str(e).splitlines()[0]) from None
    return items


class SourceSpec(BaseModel):
    """What `publish_source` needs: the SDK's `SourceInfo`, with compose URLs per environment."""

    model_config = ConfigDict(hide_input_in_errors=True)  # a rejected value may be a key

    name: str
    description: str = ""
    logo_url: str = ""
    cpu: str = Field(default="", description="docker-compose URL for CPU providers")
    nvidia: str = Field(default="", description="docker-compose URL for NVIDIA providers")
    amd: str = Field(default="", description="docker-compose URL for AMD providers")
    min_payment: int = Field(ge=0, le=2**96 - 1)  # a task's payment fits in 96 bits
    min_available_lockup: int = Field(default=0, ge=0, le=2**256 - 1)
    max_expiry_duration: int = Field(default=3600, gt=0, le=2**256 - 1)
    delivery_method: DeliveryMethod = DeliveryMethod.FIRST_RESPONSE

    @field_validator("name", "description")
    @classmethod
    def _no_key(cls, v: str, info: Any) -> str:
        refuse_secret(info.field_name, v)  # the metadata is public
        return v

    @field_validator("logo_url", "cpu", "nvidia", "amd")
    @classmethod
    def _url(cls, v: str, info: Any) -> str:
        return check_url(info.field_name, v) if v else v

    @field_validator("delivery_method", mode="before")
    @classmethod
    def _method(cls, v: Any) -> Any:
        if isinstance(v, str):
            try:
                return DeliveryMethod[v.upper()]
            except KeyError:
                raise ValueError(f"one of {', '.join(m.name for m in DeliveryMethod)}") from None
        return v

    @property
    def environments(self) -> Environment:
        flags = Environment(0)
        for env in Environment:
            if getattr(self, env.name.lower()):
                flags |= env
        return flags

    def metadata(self) -> dict[str, Any]:
        """The SourceMetadata JSON (PROTOCOL.md 6)."""
        return {
            "name": self.name,
            "description": self.description,
            "logoUrl": self.logo_url,
            "cpu": self.cpu,
            "nvidia": self.nvidia,
            "amd": self.amd,
        }


class PublishedTask(BaseModel):
    index: int
    address: str
    source: str
    payment: int
    expiry_time: int
    config_url: str
    tx_hash: str = ""
    published_at: float = 0.0  # wall clock, for latency


class ResponseInfo(BaseModel):
    address: str
    provider: str
    payment: int
    data_url: str
    timestamp: int = 0
    confirmed: bool = False


class TaskResult(BaseModel):
    """The outcome of one input of a batch, in input order."""

    index: int
    status: str = Field(description="finalized, expired, failed, canceled, over_budget, deadline")
    task: str | None = None
    tasks: list[str] = Field(default_factory=list, description="every task published for this input")
    provider: str | None = None
    payment: int = 0
    response: str | None = None
    data_url: str | None = None
    result: Any = None
    latency_s: float | None = None
    republished: int = 0
    error: str | None = None
    reason: str | None = Field(
        default=None, description="why it gave no result: expired, rejected, canceled, deadline, ..."
    )
    chain_status: TaskStatus | None = None
    cached: bool = Field(default=False, description="answered from the result cache: nothing published or paid")
    open_escrow: dict[str, int] = Field(
        default_factory=dict,
        description="tasks of this input whose escrow is still held (attempted, unfinished): task -> expiry time; "
        "it returns with the network's expiry handling",
    )

    @property
    def ok(self) -> bool:
        return self.status == "finalized"


@dataclass(eq=False)  # kept in sets, by identity
class Tracked:
    """What the waiting loop knows of one task."""

    published: PublishedTask
    status: TaskStatus = TaskStatus.NEW
    attempt_count: int = 0
    responses: dict[str, ResponseView] = field(default_factory=dict)
    winner: str | None = None
    outcome: Decision | None = None
    decided_at: float | None = None
    note: str = ""
    last_news: float = 0.0  # wall clock of its latest attempt or response
    provider_errors: dict[str, str] = field(default_factory=dict)  # provider -> the error it reported
