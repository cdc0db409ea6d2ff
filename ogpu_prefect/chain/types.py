"""Protocol enums, with the exact values of the real network's ABIs (the structs are generated:
structs.py)."""

from __future__ import annotations

from dataclasses import astuple
from enum import IntEnum, IntFlag
from typing import Any


class TaskStatus(IntEnum):
    NEW = 0
    ATTEMPTED = 1
    RESPONDED = 2
    CANCELED = 3
    EXPIRED = 4
    FINALIZED = 5

    @property
    def is_final(self) -> bool:
        return self in (TaskStatus.CANCELED, TaskStatus.EXPIRED, TaskStatus.FINALIZED)


SourceStatus = IntEnum("SourceStatus", {"ACTIVE": 0, "INACTIVE": 1})
ResponseStatus = IntEnum("ResponseStatus", {"SUBMITTED": 0, "CONFIRMED": 1})
DeliveryMethod = IntEnum("DeliveryMethod", {"MANUAL_CONFIRMATION": 0, "FIRST_RESPONSE": 1})
"""How a source's tasks are paid: the client confirms a response, or the first valid one is paid."""


class Environment(IntFlag):
    CPU = 1
    NVIDIA = 2
    AMD = 4

    @classmethod
    def parse(cls, value: str | int | Environment) -> Environment:
        """`"cpu"`, `"nvidia,amd"`, 3 or an Environment -> Environment."""
        if isinstance(value, str):
            flags = cls(0)
            for part in value.replace("|", ",").split(","):
                name = part.strip().upper()
                if name not in cls.__members__:
                    raise ValueError(f"unknown environment {part.strip()!r}; expected cpu, nvidia or amd")
                flags |= cls[name]
            return flags
        return cls(int(value))


ENUMS: dict[str, type[IntEnum]] = {e.__name__: e for e in (TaskStatus, SourceStatus, ResponseStatus, DeliveryMethod)}


class AbiStruct:
    """The base of the ABIs' structs (structs.py, generated): the ABI encoder takes one as the
    tuple of its values, and the decoder builds one from that tuple."""

    def as_tuple(self) -> tuple[Any, ...]:
        return astuple(self)  # type: ignore[call-overload]

    @classmethod
    def from_tuple(cls, values: tuple[Any, ...]) -> Any:
        return cls(*values)
