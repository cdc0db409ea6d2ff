"""The production stack as Prefect's self-hosting guide lays it out: two API servers and one
background-services process on one PostgreSQL + Redis, with a worker on each API server. Real
processes: `postgres` (Debian's 15), `redis-server` (installed by the stack where missing), Prefect;
the UI of either stack checked through its `/ui-settings` and, for production, in headless Chromium."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ogpu_prefect.stack import PrefectStack, StackUnavailableError, ensure_production

from .test_ui import browser, page_text  # noqa: F401  (the module's headless Chromium)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

NUL = b"\0"
FLOW = """from prefect import flow


@flow
def probe(x: int) -> int:
    return x + 1
"""


def cli(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PREFECT_INTEGRATIONS_OGPU_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "ogpu_prefect.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def home() -> Iterator[Path]:
    # Not tmp_path: pytest's base folder is 0700, and the postgres user must reach its data folder.
    path = Path(tempfile.mkdtemp(prefix="ogpu-stack-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def processes_under(folder: Path) -> list[str]:
    """Live (non-zombie) processes whose cwd is inside `folder`: postgres and its backends, redis,
    the Prefect servers, flow-run children."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if not entry.name.isdigit() or (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            if os.readlink(entry / "cwd").startswith(str(folder)):
                found.append(f"{entry.name}: {(entry / 'cmdline').read_bytes().replace(NUL, b' ').decode()}")
        except OSError:
            continue
    return found


def port_free(port: int) -> bool:
    try:
        socket.create_server(("127.0.0.1", port)).close()
        return True
    except OSError:
        return False


def ui_api_url(api_url: str) -> str:
    """Where the UI served next to `api_url` sends its API calls: what its `/ui-settings` says."""
    settings = httpx.get(f"{api_url.removesuffix('/api')}/ui-settings", timeout=10)
    assert settings.status_code == 200, settings.text
    return settings.json()["api_url"]


def test_the_sqlite_stack_ui_talks_to_its_own_api(tmp_path: Path) -> None:
    up = cli("server", "up", "--json", home=tmp_path)
    try:
        assert up.returncode == 0, up.stderr
        (url,) = json.loads(up.stdout)["api_urls"]
        assert ui_api_url(url) == url  # was Prefect's default, http://127.0.0.1:4200/api
    finally:
        assert cli("server", "down", home=tmp_path).returncode == 0


def test_sqlite_refuses_several_servers(tmp_path: Path) -> None:
    out = cli("server", "up", "--stack", "sqlite", "--servers", "2", home=tmp_path)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "--servers" in out.stderr and "production" in out.stderr
    assert cli("server", "status", home=tmp_path).returncode == 1


def test_two_api_servers_share_postgres_and_redis_with_a_worker_on_each(home: Path) -> None:
    try:
        ensure_production()  # installs redis-server (and PostgreSQL 15) where missing
    except StackUnavailableError as e:
        pytest.skip(f"the production stack cannot run here: {e}")

    from .prefect_env import api_at

    t0 = time.monotonic()
    stack = PrefectStack(home, stack="production", servers=2)
    with stack as info:
        started = time.monotonic() - t0
        a, b = info.api_urls
        state = stack.read_state()
        assert state is not None
        procs = {p["name"]: p for p in state["procs"]}
        assert set(procs) == {"postgres", "redis", "api-1", "api-2", "services"}
        assert info.database_url.startswith("postgresql+asyncpg://") and info.redis is not None
        assert info.settings["PREFECT_MESSAGING_BROKER"] == "prefect_redis.messaging"
        services_env = Path(f"/proc/{procs['services']['pid']}/environ").read_bytes().split(b"\0")
        # Prefect's default (1) wrote one task run per transaction: records lagged batches by 24-70 s
        assert b"PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE=100" in services_env
        assert b"PREFECT_SERVER_SERVICES_EVENT_PERSISTER_BATCH_SIZE=200" in services_env
        for url in (a, b):
            assert httpx.get(f"{url}/health", timeout=5).json() is True
            assert ui_api_url(url) == url, "each server's UI talks to its own API"
        assert a != b and stack.status()["running"]

        status = cli("server", "status", "--json", home=home)
        assert status.returncode == 0 and json.loads(status.stdout)["api_urls"] == [a, b], status.stderr

        # One database: what server A writes, server B reads.
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.actions import VariableCreate

        name = f"stack-{uuid.uuid4().hex[:8]}"
        with api_at(a), get_client(sync_client=True) as client:
            client.create_variable(VariableCreate(name=name, value={"written": "through A"}))
        with api_at(b), get_client(sync_client=True) as client:
            variable = client.read_variable_by_name(name)
            assert variable is not None and variable.value == {"written": "through A"}

        check_events_cross_servers(a, b, info.redis[1])
        check_a_worker_on_each_server(a, b, home, name)

        # `down` from another process stops what this one started.
        down = cli("server", "down", "--json", home=home)
        assert down.returncode == 0, down.stderr
        assert sorted(json.loads(down.stdout)["stopped"]) == sorted(procs)
    ports = [int(u.rsplit(":", 1)[1].split("/")[0]) for u in (a, b)] + [info.redis[1]]
    ports.append(int(info.database_url.rsplit(":", 1)[1].split("/")[0]))
    deadline = time.monotonic() + 15
    while processes_under(home) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_under(home) == [], "every process of the stack has exited"
    assert all(port_free(p) for p in ports), f"ports {ports} are free again"
    assert not stack.state_path.exists() and not stack.status()["running"]
    print(f"production stack with 2 API servers healthy in {started:.1f} s; test {time.monotonic() - t0:.1f} s")


def check_events_cross_servers(a: str, b: str, redis_port: int) -> None:
    """An event sent to server A reaches a subscriber of server B's live feed (through Redis), and the
    services process persists it in PostgreSQL, where server B's event query finds it."""
    import redis
    from prefect.events import Event
    from prefect.events.clients import PrefectEventsClient, PrefectEventSubscriber
    from prefect.events.filters import EventFilter, EventNameFilter

    name = f"ogpu.stack.probe.{uuid.uuid4().hex[:8]}"

    async def roundtrip() -> Any:
        async with PrefectEventSubscriber(api_url=b, filter=EventFilter(event=EventNameFilter(name=[name]))) as feed:
            async with PrefectEventsClient(api_url=a) as events:
                # The subscriber does not wait for B to confirm its filter: an event that beats the
                # filter to B is not in B's feed, so send again until one arrives.
                for _ in range(10):
                    await events.emit(Event(event=name, resource={"prefect.resource.id": "ogpu.stack.test"}))
                    try:
                        return await asyncio.wait_for(feed.__anext__(), 3)
                    except TimeoutError:
                        continue
            raise AssertionError("no event sent through server A reached server B's feed in 30 s")

    received = asyncio.run(roundtrip())
    assert received.event == name and received.resource.id == "ogpu.stack.test"
    assert redis.Redis(host="127.0.0.1", port=redis_port).xlen("events") > 0, "events travel on a Redis stream"

    deadline = time.monotonic() + 60
    while True:
        found = httpx.post(f"{b}/events/filter", json={"filter": {"event": {"name": [name]}}}, timeout=10)
        assert found.status_code == 200, found.text
        if name in [e["event"] for e in found.json()["events"]]:
            break
        assert time.monotonic() < deadline, "the services process persisted the event"
        time.sleep(1)


def check_a_worker_on_each_server(a: str, b: str, home: Path, tag: str) -> None:
    """A process worker polls each API server; the flow run created through one server is picked up
    and run by the worker on the other, and both finish Completed."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    from .prefect_env import api_at

    src = home / "flows"
    src.mkdir()
    (src / "probe_flow.py").write_text(FLOW)
    pool = f"pool-{tag}"
    with api_at(a), get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
        flow_id = client.create_flow_from_name("probe")
        deployment = client.create_deployment(
            flow_id=flow_id, name="probe", work_pool_name=pool, entrypoint="probe_flow.py:probe", path=str(src)
        )
        for_b = client.create_flow_run_from_deployment(deployment, parameters={"x": 1}, work_queue_name="b").id
    with api_at(b), get_client(sync_client=True) as client:
        for_a = client.create_flow_run_from_deployment(deployment, parameters={"x": 2}, work_queue_name="a").id

    # Each worker a process of its own (as on two hosts); in this process, a worker would leave
    # Prefect's events worker bound to a server that stops with this test, and every later
    # event of the session would queue for it (draining them at exit took hours).
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--work-queue", queue]
            + ["--name", f"worker-{queue}", "--type", "process", "--run-once"],
            env={**os.environ, "PREFECT_API_URL": url},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for url, queue in ((a, "a"), (b, "b"))
    ]
    for w in workers:  # --run-once: one poll, then it waits for what it started
        out = w.communicate(timeout=240)[0].decode(errors="replace")
        assert w.returncode == 0, out[-2000:]
    for url, run_id in ((b, for_a), (a, for_b)):  # read through the server that did not run it
        with api_at(url), get_client(sync_client=True) as client:
            run = client.read_flow_run(run_id)
            assert run.state is not None and run.state.is_completed(), run.state
            workers = {w.name for w in client.read_workers_for_work_pool(pool)}
            assert workers == {"worker-a", "worker-b"}


def test_the_production_stack_ui_shows_a_flow_run(home: Path, browser: Any) -> None:  # noqa: F811
    """`server up --stack production` as a user runs it, a real flow run through its API, then the
    run's page in Chromium: the UI reaches the API (it used to show "Can't connect to Server API")."""
    try:
        ensure_production()
    except StackUnavailableError as e:
        pytest.skip(f"the production stack cannot run here: {e}")
    up = cli("server", "up", "--stack", "production", "--json", home=home)
    try:
        assert up.returncode == 0, up.stderr
        (url,) = json.loads(up.stdout)["api_urls"]
        assert ui_api_url(url) == url
        name = f"ui-probe-{uuid.uuid4().hex[:8]}"
        code = FLOW + f"\n\nprobe.with_options(flow_run_name={name!r})(1)\n"
        env = {**os.environ, "PREFECT_API_URL": url, "PREFECT_HOME": str(home / "client")}
        ran = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=180)
        assert ran.returncode == 0, ran.stderr[-2000:]
        found = httpx.post(f"{url}/flow_runs/filter", json={"flow_runs": {"name": {"any_": [name]}}}, timeout=10)
        (run,) = found.json()
        assert run["state_type"] == "COMPLETED"
        ui = url.removesuffix("/api")
        text = page_text(browser, f"{ui}/runs/flow-run/{run['id']}", [name, "Completed"], "production-flow-run.png")
        assert name in text and "Completed" in text and "Can't connect" not in text, text[:2000]
    finally:
        assert cli("server", "down", home=home).returncode == 0
