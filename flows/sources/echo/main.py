"""echo: the trivial sample source, for fast tests and benchmarks. Written with the official
`ogpu.service` API, unchanged: `echo` returns its input under `echo`, with the text upper-cased if
any; `sleep` answers after `seconds` (a task that is still running when a test needs one)."""

from __future__ import annotations

import time
from typing import Any

import ogpu.service
from pydantic import BaseModel, ConfigDict


class EchoInput(BaseModel):
    model_config = ConfigDict(extra="allow")

    text: str | None = None


class EchoOutput(BaseModel):
    echo: dict[str, Any]
    upper: str | None = None


@ogpu.service.expose()
def echo(data: EchoInput) -> EchoOutput:
    print(f"echo: {len(data.model_dump())} field(s)", flush=True)
    return EchoOutput(echo=data.model_dump(), upper=data.text.upper() if data.text else None)


class SleepInput(BaseModel):
    seconds: float = 1.0


class SleepOutput(BaseModel):
    slept: float


@ogpu.service.expose()
def sleep(data: SleepInput) -> SleepOutput:
    print(f"sleep: {data.seconds}s", flush=True)
    time.sleep(data.seconds)
    return SleepOutput(slept=data.seconds)


if __name__ == "__main__":
    ogpu.service.start()
