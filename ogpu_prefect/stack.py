"""Prefect server stacks under the `home` setting (`.ogpu/stack/`), driven by `ogpu-prefect server`:
`sqlite`, one `prefect server start` with its services (the demo's embedded default), or `production`,
the layout of Prefect's self-hosting guide on one machine: PostgreSQL 15, Redis (messaging, causal
ordering, lease storage, Docket), migrations run once, N API servers with `--no-services` and one
`prefect server services start` process.

    with PrefectStack(home, stack="production", servers=2) as info:  # a StackInfo
        info.api_urls  # ['http://127.0.0.1:P1/api', 'http://127.0.0.1:P2/api']

`host` puts the API servers (and the URL their UI calls) on another address of this machine, for
workers and clients on other hosts; PostgreSQL and Redis stay on this machine's loopback, reached
only by the servers beside them (their trust authentication must never face a network).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .chain.errors import InvalidInputError, OGPUError
from .settings import get_settings

STACKS = ("sqlite", "production")
PG_BIN = Path("/usr/lib/postgresql/15/bin")
HOST = "127.0.0.1"
"""Where PostgreSQL and Redis listen (always), and the API servers by default."""
SERVICE_BATCHING = {
    # Prefect's defaults read one message and write one row per database transaction in the task
    # run recorder (batch 1): a worker's 1,000 task runs came in as ~2,000 task-run events and
    # took the recorder 20-70 s after the batch. Batches of 100, flushed every second, keep a
    # record within seconds of its event at the same durability (rows are committed per batch).
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_READ_BATCH_SIZE": "100",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "100",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL": "1",
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_READ_BATCH_SIZE": "100",
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_BATCH_SIZE": "200",
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL": "1",
}
"""Service settings every stack's servers get (`StackInfo.settings`): event and task-run records
written in batches, within about a second."""


class StackUnavailableError(OGPUError):
    """PostgreSQL, Redis or the `production` extra is missing and cannot be installed here."""


@dataclass(frozen=True)
class StackInfo:
    """A running stack. `settings`: the Prefect settings all its servers share, i.e. what an API
    server, services process or worker on another host needs besides `PREFECT_API_URL`."""

    stack: str
    home: Path
    api_urls: list[str]
    database_url: str
    redis: tuple[str, int] | None
    settings: dict[str, str]

    @property
    def api_url(self) -> str:
        return self.api_urls[0]

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "home": str(self.home)}


class PrefectStack:
    """One stack under `home/stack`. `stop()` works from the state file alone (so `down` in another
    process stops what `up` started) and signals only processes it proves are ours."""

    def __init__(
        self,
        home: Path | str | None = None,
        *,
        stack: str = "sqlite",
        servers: int = 1,
        timeout: float = 180.0,
        extra_env: Mapping[str, str] | None = None,
        host: str = HOST,
    ) -> None:
        if stack not in STACKS:
            raise InvalidInputError("--stack", f"expected one of {', '.join(STACKS)}, got {stack!r}")
        if servers < 1:
            raise InvalidInputError("--servers", f"expected at least 1, got {servers}")
        if stack == "sqlite" and servers > 1:
            raise InvalidInputError("--servers", "SQLite cannot be shared by several servers: use --stack production")
        home = get_settings().home if home is None else home
        # Absolute: children run with their cwd in here (it is part of the proof that a pid is ours).
        self.dir = Path(home).resolve() / "stack"
        self.stack, self.servers, self.timeout = stack, servers, timeout
        self.host = host  # the API servers' address: one other hosts reach, for a stack they share
        self.extra_env = dict(extra_env or {})  # more server settings (log level, retention, ...)
        self.state_path = self.dir / "state.json"
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._state: dict[str, Any] = {}

    def read_state(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.state_path.read_text()) if self.state_path.exists() else None
        except ValueError:
            raise InvalidInputError("state", f"{self.state_path} is not a stack state file: remove it") from None

    def info(self) -> StackInfo | None:
        if not (state := self.read_state()) or not state.get("api_urls"):
            return None
        redis = (state["redis"][0], int(state["redis"][1])) if state["redis"] else None
        urls, db = state["api_urls"], state["database_url"]
        return StackInfo(state["stack"], self.dir.parent, urls, db, redis, state["settings"])

    def status(self) -> dict[str, Any]:
        """{'running', 'stack', 'api_urls', 'components': {name: ours and answering}} from the state file."""
        state = self.read_state() or {"stack": None, "procs": []}
        comps = {p["name"]: _ours(p) for p in state["procs"]}
        urls = state.get("api_urls", [])
        for i, url in enumerate(urls, 1):
            comps[f"api-{i}"] = comps.get(f"api-{i}", False) and _healthy(url)
        if state.get("redis"):  # its pid alone does not say it answers
            comps["redis"] = comps.get("redis", False) and _redis_ping(int(state["redis"][1]))
        running = bool(urls) and all(comps.values())
        return {"running": running, "stack": state["stack"], "api_urls": urls, "components": comps}

    def start(self) -> StackInfo:
        """Starts the stack; returns the one already running here if it has the same shape."""
        if state := self.read_state():
            if self.status()["running"]:
                same_host = all(_url_host(url) == self.host for url in state["api_urls"])
                if state["stack"] == self.stack and len(state["api_urls"]) == self.servers and same_host:
                    return self.info()  # type: ignore[return-value]
                shape = f"a {state['stack']} stack with API server(s) {', '.join(state['api_urls'])}"
                raise InvalidInputError("--stack", f"{shape} runs under {self.dir}: `ogpu-prefect server down` first")
            self.stop()  # what is left of a crashed or half-started stack
        for sub in ("logs", "prefect", "redis"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o711)  # the postgres user must reach pgdata/ in here
        self._state = {"stack": self.stack, "procs": [], "redis": None}
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self.info()  # type: ignore[return-value]

    def stop(self) -> list[str]:
        """Stops each process the state file names that is still ours; returns their names."""
        if not (state := self.read_state()):
            return []
        stopped = []
        # Servers first (they hold database connections and Redis consumers), then Redis, then PostgreSQL.
        for proc in sorted(state["procs"], key=lambda p: {"redis": 1, "postgres": 2}.get(p["name"], 0)):
            if not _ours(proc):
                continue
            for pg_mode, sig in (("fast", signal.SIGTERM), ("immediate", signal.SIGKILL)):  # gently, then not
                if proc["name"] == "postgres":
                    self._pg(["pg_ctl", "stop", "-m", pg_mode, "-D", proc["cwd"]], check=False)
                else:
                    with contextlib.suppress(ProcessLookupError):  # each leads its own session: signal the group
                        os.killpg(proc["pid"], sig)
                if self._wait_gone(proc["pid"], 20.0):
                    break
            stopped.append(proc["name"])
        self.state_path.unlink(missing_ok=True)
        return stopped

    def __enter__(self) -> StackInfo:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _start(self) -> None:
        ports = _free_ports(self.servers, self.host)
        if self.stack == "production":
            self._start_backends()
        else:
            db = f"sqlite+aiosqlite:///{self.dir / 'prefect' / 'prefect.db'}"
            settings = {"PREFECT_API_DATABASE_CONNECTION_URL": db, **SERVICE_BATCHING}
            self._state.update(database_url=db, settings=settings)
        host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 address, bracketed in a URL
        urls = [f"http://{host}:{p}/api" for p in ports]
        for i, (port, url) in enumerate(zip(ports, urls), 1):
            args = ["server", "start", "--host", self.host, "--port", str(port)]
            # The UI asks its server where the API is (GET /ui-settings); `--port` alone leaves
            # Prefect's default there (port 4200), so each server names its own.
            env = {"PREFECT_SERVER_UI_API_URL": url}
            # Servers registering block types at once on a fresh database race on the inserts
            # (IntegrityError at startup): the first registers, the others skip it.
            if i > 1:
                env["PREFECT_API_BLOCKS_REGISTER_ON_START"] = "false"
            self._spawn_prefect(f"api-{i}", args + (["--no-services"] if self.stack == "production" else []), env)
        if self.stack == "production":  # the guide: one background-services process beside the API servers
            self._spawn_prefect("services", ["server", "services", "start"], {})
        self._state["api_urls"] = urls
        self._write_state()
        self._wait(lambda: all(_healthy(url) for url in urls), f"Prefect API {', '.join(urls)}")

    def _start_backends(self) -> None:
        redis = ensure_production()
        pg_port, redis_port = _free_ports(2)
        self._start_postgres(pg_port)
        self._start_redis(redis, redis_port)
        self._state["database_url"] = db = f"postgresql+asyncpg://postgres@{HOST}:{pg_port}/prefect"
        self._state["redis"] = [HOST, redis_port]
        self._state["settings"] = {  # the self-hosting guide's settings
            "PREFECT_API_DATABASE_CONNECTION_URL": db,
            "PREFECT_API_DATABASE_MIGRATE_ON_START": "false",
            "PREFECT_MESSAGING_BROKER": "prefect_redis.messaging",
            "PREFECT_MESSAGING_CACHE": "prefect_redis.messaging",
            "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": "prefect_redis.ordering",
            "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect_redis.lease_storage",
            "PREFECT_REDIS_MESSAGING_HOST": HOST,
            "PREFECT_REDIS_MESSAGING_PORT": str(redis_port),
            "PREFECT_REDIS_MESSAGING_DB": "0",
            "PREFECT_SERVER_DOCKET_URL": f"redis://{HOST}:{redis_port}/1",
            **SERVICE_BATCHING,
        }
        self._write_state()
        log = self.dir / "logs" / "migrate.log"
        with open(log, "wb") as out:  # once, before any server starts (the guide)
            done = subprocess.run([sys.executable, "-m", "prefect", "server", "database", "upgrade", "-y"],
                                  env=self._env({}), cwd=self.dir, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
        if done.returncode:
            raise OGPUError(f"Prefect's database migrations failed (exit {done.returncode}): {_tail(log)}")

    def _env(self, more: Mapping[str, str]) -> dict[str, str]:
        # Inherited PREFECT_* (a client's API URL, a profile) must not reconfigure the servers.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(PREFECT_HOME=str(self.dir / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
        return {**env, **self._state.get("settings", {}), **self.extra_env, **more}

    def _spawn(self, name: str, cmd: list[str], cwd: Path, match: list[str], env: Mapping[str, str]) -> None:
        """Starts a process in its own session (it outlives `up`; `stop` signals its group)."""
        with open(self.dir / "logs" / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(cmd, env=self._env(env), cwd=cwd, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        self._children[proc.pid] = proc
        self._track(name, proc.pid, cwd, match)

    def _spawn_prefect(self, name: str, args: list[str], env: Mapping[str, str]) -> None:
        match = ["prefect", " ".join(args[:2])] + [f"--port {b}" for a, b in zip(args, args[1:]) if a == "--port"]
        self._spawn(name, [sys.executable, "-m", "prefect", *args], self.dir, match, env)

    def _wait(self, ready: Callable[[], bool], what: str) -> None:
        """Polls `ready`; fails at once when a process we started has died meanwhile."""
        deadline = time.monotonic() + self.timeout
        while not ready():
            for proc in self._state["procs"]:
                if not self._alive(proc["pid"]):
                    log = self.dir / "logs" / f"{proc['name']}.log"
                    raise OGPUError(f"{proc['name']} exited while the stack started: {_tail(log)} (log: {log})")
            if time.monotonic() > deadline:
                raise OGPUError(f"{what} not ready after {self.timeout:.0f} s (logs: {self.dir / 'logs'})")
            time.sleep(0.1)

    def _start_postgres(self, port: int) -> None:
        data = self.dir / "pgdata"
        if not (data / "PG_VERSION").exists():
            shutil.rmtree(data, ignore_errors=True)
            data.mkdir(mode=0o700)
            if os.geteuid() == 0:  # postgres refuses to run as root: a private cluster owned by `postgres`
                shutil.chown(data, "postgres", "postgres")
                if self._pg(["test", "-x", str(data)], check=False).returncode:
                    why = "give its parent folders o+x, or move PREFECT_INTEGRATIONS_OGPU_HOME"
                    raise StackUnavailableError(f"the postgres user cannot reach {data}: {why}")
            self._pg(["initdb", "-D", str(data), "-U", "postgres", "-E", "UTF8", "--auth=trust"])
            # Trust only on loopback and on the socket inside this private folder.
            (data / "pg_hba.conf").write_text("local all all trust\nhost all all 127.0.0.1/32 trust\n")
        opts = f"-p {port} -k {shlex.quote(str(data))} -c listen_addresses={HOST} -c max_connections=200"
        self._pg(["pg_ctl", "start", "-w", "-t", "60", "-D", str(data), "-l", str(data / "postgres.log"), "-o", opts])
        self._track("postgres", int((data / "postmaster.pid").read_text().split()[0]), data, [f"-p {port}"])
        made = self._pg(["createdb", "-h", HOST, "-p", str(port), "-U", "postgres", "prefect"], check=False)
        if made.returncode and "already exists" not in made.stderr:
            raise OGPUError(f"createdb prefect failed: {made.stderr.strip()}")

    def _start_redis(self, redis: str, port: int) -> None:
        # Not --daemonize: started like the servers, its pid is known without a pid file.
        cmd = [redis, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no", "--dir", "."]
        self._spawn("redis", cmd, self.dir / "redis", ["redis-server", f":{port}"], {})
        self._wait(lambda: _redis_ping(port), f"redis-server on port {port}")

    def _pg(self, cmd: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        """A PostgreSQL program, as the `postgres` user when we are root."""
        cmd = [str(PG_BIN / cmd[0]) if (PG_BIN / cmd[0]).exists() else cmd[0], *cmd[1:]]
        full = (["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []) + cmd
        done = subprocess.run(full, capture_output=True, text=True, cwd="/")
        if check and done.returncode:
            raise OGPUError(f"{Path(cmd[0]).name} failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")
        return done

    def _alive(self, pid: int) -> bool:
        if pid in self._children:  # our child: poll() reaps it (a zombie still has a /proc entry)
            return self._children[pid].poll() is None
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    def _wait_gone(self, pid: int, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while self._alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        return not self._alive(pid)

    def _track(self, name: str, pid: int, cwd: Path, match: list[str]) -> None:  # what `_ours` checks later
        self._state["procs"].append({"name": name, "pid": pid, "cwd": str(cwd), "match": match})
        self._write_state()

    def _write_state(self) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._state, indent=1) + "\n")
        tmp.replace(self.state_path)


def _ours(proc: Mapping[str, Any]) -> bool:
    """Still the process we started (pids get reused): same cwd, expected program and port in its cmdline."""
    try:
        argv = Path(f"/proc/{proc['pid']}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        cwd = os.readlink(f"/proc/{proc['pid']}/cwd")
    except OSError:
        return False
    return cwd == proc["cwd"] and all(m in argv for m in proc["match"])


def _free_ports(n: int, host: str = HOST) -> list[int]:
    with contextlib.ExitStack() as held:  # open together, so the n ports differ
        return [held.enter_context(socket.create_server((host, 0))).getsockname()[1] for _ in range(n)]


def _url_host(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).hostname or ""


def _healthy(api_url: str) -> bool:
    import requests  # the package's HTTP client, imported here: `server` commands start fast

    try:
        return requests.get(f"{api_url}/health", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _tail(path: Path, n: int = 400) -> str:
    return " ".join(path.read_text(errors="replace")[-n:].split()) if path.exists() else "(no log)"


def _apt_install(package: str) -> None:
    """Installs a Debian package (root and apt-get): the stack's own set-up on a fresh machine."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise StackUnavailableError(f"{package} is not installed, and installing it needs root and apt-get")
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=300", package]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(cmd, env=env, capture_output=True).returncode:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)  # a fresh machine's empty lists
        if (done := subprocess.run(cmd, env=env, capture_output=True, text=True)).returncode:
            raise StackUnavailableError(f"apt-get install {package} failed: {done.stderr.strip()[-300:]}")


def ensure_production() -> str:
    """Installs PostgreSQL 15 and Redis where missing, checks the `production` extra; redis-server's path."""
    import importlib.util

    for module in ("prefect_redis", "asyncpg"):
        if importlib.util.find_spec(module) is None:
            raise StackUnavailableError(f"{module} is not installed: install ogpu-prefect[production]")
    if not (PG_BIN / "pg_ctl").exists():
        _apt_install("postgresql-15")
    path = f"{os.environ.get('PATH', '')}:/usr/bin:/usr/sbin"  # Debian's, even under a minimal PATH
    if not shutil.which("redis-server", path=path):
        _apt_install("redis-server")
    return shutil.which("redis-server", path=path) or "/usr/bin/redis-server"
