"""The hardware-backend plugin interface: how a provider runs a source's compose service (Docker
on cpu / nvidia / amd, or plain processes). Plugins register backends through the
`ogpu_prefect_hardware_backends` hook."""

from __future__ import annotations

import hashlib
import subprocess
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar

from .chain.types import Environment
from .compose import ComposeSpec

LogSink = Callable[[str], None]


def pump_lines(proc: subprocess.Popen[bytes], log: LogSink) -> None:
    """Sends each non-empty line of `proc`'s stdout to `log` until it closes (run it in a thread)."""
    assert proc.stdout is not None
    for raw in proc.stdout:
        line = raw.decode(errors="replace").rstrip()
        if line:
            log(line)


def owner_tag(address: str, chain_id: int, api_url: str) -> str:
    """The `owner` a provider worker gives its backend: its address, on one chain, working for one
    Prefect API (`api_url`). Its key's lease
    (worker/key_lease.py) allows one live worker per key, chain and Prefect API, so a service with
    this tag that outlived its worker is a dead predecessor's, safe for `reap`. The same key
    elsewhere (another devnet on this host: same chain id, same keys; another Prefect server) is
    another worker's, whose services are not ours to stop. The address comes first (names built
    from the owner keep it); the chain and the API follow as a short digest (an API URL may carry
    what a process listing should not show)."""
    scope = hashlib.sha256(f"{chain_id} {api_url.rstrip('/')}".encode()).hexdigest()[:12]
    return f"{address.lower()}-{scope}"


class RunningService(ABC):
    """A source's service, up and answering the ogpu.service protocol at `base_url`."""

    base_url: str

    @abstractmethod
    def alive(self) -> bool:
        """Whether it still runs."""

    @abstractmethod
    def stop(self) -> None:
        """Stops it and everything it started; leaves no process or container behind. Idempotent."""


class HardwareBackend(ABC):
    """Base of every hardware backend. Subclasses set `name` and implement `environments` and
    `start`. `owner` names the provider process family (a worker's is `owner_tag`: its address,
    chain and Prefect API): everything a backend starts carries it, so `reap` can remove what a
    killed predecessor left behind, and nothing of another family."""

    name: ClassVar[str]

    def __init__(self, owner: str = "", startup_timeout_s: float = 60.0) -> None:
        self.owner = owner.lower()
        self.startup_timeout_s = startup_timeout_s
        """How long a service may take to answer HTTP after its start (backend_options can set it)."""

    def reap(self) -> int:
        """Stops every service of this `owner` still running from an earlier process (one that
        was SIGKILLed and could not clean up); returns how many. Default: nothing to reap."""
        return 0

    @abstractmethod
    def environments(self) -> Environment:
        """The environments (CPU / NVIDIA / AMD) this host can serve with this backend."""

    @abstractmethod
    def start(self, compose: ComposeSpec, env: Environment, *, callback_url: str, log: LogSink) -> RunningService:
        """Brings the compose file's service up for `env`, with CALLBACK_URL set, streaming
        its output lines to `log`; returns once it answers HTTP (or raises)."""
