"""`local`: runs a source's service as a plain process, from the `x-ogpu-local` extension of its
compose file (see ogpu_prefect/compose.py). For development, CI, and providers without
Docker. Each service gets its own free port (PORT), so several run side by side; the process group
is stopped as a whole. Every process carries `OGPU_PREFECT_OWNER` in its environment, which is how
`reap` finds those a SIGKILLed provider left behind."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from string import Template

from ogpu_prefect._loopback import free_port
from ogpu_prefect.backends import HardwareBackend, LogSink, RunningService, pump_lines
from ogpu_prefect.chain.types import Environment
from ogpu_prefect.compose import ComposeSpec
from ogpu_prefect.hookspecs import hookimpl
from ogpu_prefect.worker.service import ServiceClient, ServiceError


class LocalService(RunningService):
    def __init__(self, proc: subprocess.Popen[bytes], base_url: str, pump: threading.Thread) -> None:
        self.proc = proc
        self.base_url = base_url
        self._pump = pump

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            except ProcessLookupError:
                pass
        try:  # children that outlived the leader
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._pump.join(timeout=5)


class LocalBackend(HardwareBackend):
    name = "local"

    def environments(self) -> Environment:
        return Environment.CPU  # no isolation from the host's GPUs is promised: CPU only

    def start(self, compose: ComposeSpec, env: Environment, *, callback_url: str, log: LogSink) -> LocalService:
        if env is not Environment.CPU:
            raise ValueError(f"the local backend serves CPU only, not {env!r}")
        spec = compose.local_spec()
        port = free_port()
        env = {
            **os.environ,
            **spec.env,
            "PORT": str(port),
            "CALLBACK_URL": callback_url,
            "PYTHONUNBUFFERED": "1",
            OWNER_VAR: self.owner or "-",
        }
        argv = [Template(a).safe_substitute(env) for a in shlex.split(spec.command)]
        if argv and argv[0] in ("python", "python3"):
            argv[0] = sys.executable  # the provider's interpreter, with ogpu-prefect installed
        proc = subprocess.Popen(
            argv,
            cwd=compose.directory / spec.working_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        pump = threading.Thread(target=pump_lines, args=(proc, log), daemon=True, name=f"ogpu-local-{port}")
        pump.start()
        service = LocalService(proc, f"http://127.0.0.1:{port}", pump)
        client = ServiceClient(service.base_url)
        deadline = time.time() + self.startup_timeout_s
        while not client.ready():
            if not service.alive():
                service.stop()
                raise ServiceError(f"{' '.join(argv)} exited with {proc.returncode} before serving")
            if time.time() > deadline:
                service.stop()
                raise ServiceError(f"{' '.join(argv)} did not serve on port {port} within {self.startup_timeout_s}s")
            time.sleep(0.05)
        return service

    def reap(self) -> int:
        if not self.owner:
            return 0
        groups = set()
        for pid, env in _processes_with(OWNER_VAR):
            if env == self.owner and pid != os.getpid():
                try:
                    groups.add(os.getpgid(pid))
                except ProcessLookupError:
                    pass
        for group in groups - {os.getpgrp()}:
            try:
                os.killpg(group, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        return len(groups)


OWNER_VAR = "OGPU_PREFECT_OWNER"


def _processes_with(var: str) -> list[tuple[int, str]]:
    """(pid, value) of this user's processes whose environment sets `var`."""
    found, prefix = [], f"{var}=".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone, or not ours
            continue
        for item in environ.split(b"\0"):
            if item.startswith(prefix):
                found.append((int(entry.name), item[len(prefix) :].decode(errors="replace")))
                break
    return found


@hookimpl
def ogpu_prefect_hardware_backends() -> dict[str, type[HardwareBackend]]:
    return {LocalBackend.name: LocalBackend}
