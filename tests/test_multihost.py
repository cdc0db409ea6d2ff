"""Beyond one machine: the Prefect API (production stack: PostgreSQL, Redis, an API server, the
background services), the chain node, the payload storage, two provider workers and the client,
each on a host of its own: Linux network namespaces on one bridge (tests/netns.py), each with its
address in 10.231.0.0/24 and its own loopback. Each part is started on its host as an operator
would start it there (`ogpu-prefect server up --host`, `ogpu-prefect devnet up --host`, `prefect
worker start`, the run_batch flow), configured only with the other hosts' addresses (the storage
by its internal name, `store.internal`, as a private network's DNS would give it). A batch of
6 tasks must finalize with each task's provider record in Prefect, and nothing that crosses hosts
may be bound to, or pointed at, a loopback address: what listens on loopback is only what its own
host uses (PostgreSQL and Redis beside the API; each worker's service and callback receiver).

Stand-in: the storage host runs tests/ipfs_stub.py, the real network's IPFS upload API and gateway
protocol (that service is on the internet, which these hosts cannot reach); the product's own
`IpfsStore` writes to it and every host reads from it over HTTP. Nothing else is mocked.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ogpu_prefect.plugins.local_backend import OWNER_VAR

from .flow_proc import REPO, run_flow_elsewhere
from .netns import Hosts, netns_refusal

pytestmark = pytest.mark.slow

HOSTS = {"api": 2, "chain": 3, "store": 4, "w1": 11, "w2": 12, "client": 20}
WORKERS = {"w1": "provider1", "w2": "provider2"}
PREFIX = "mh"
PY = sys.executable
CLI = [PY, "-m", "ogpu_prefect.cli"]
LOOPBACK = re.compile(r"127\.\d+\.\d+\.\d+|localhost|\[::1\]", re.IGNORECASE)
# On the API host, PostgreSQL and Redis serve only the API's own processes, on its loopback.
SAME_HOST_SETTINGS = {
    "PREFECT_API_DATABASE_CONNECTION_URL",
    "PREFECT_REDIS_MESSAGING_HOST",
    "PREFECT_SERVER_DOCKET_URL",
}


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    if why := netns_refusal():
        pytest.skip(f"needs Linux network namespaces: {why}")
    with Hosts(HOSTS) as made:
        yield made


def test_a_batch_across_hosts(hosts: Hosts, tmp_path: Path) -> None:
    root = Path(tempfile.mkdtemp(prefix="ogpu-mh-"))
    root.chmod(0o711)  # PostgreSQL runs as its own user and must reach its data folder
    homes = {name: root / name for name in HOSTS}

    def env(name: str, **more: str) -> dict[str, str]:
        """A bare environment: nothing inherited can point a process at this machine's loopback."""
        keep = ("PATH", "HOME", "LANG", "PREFECT_INTEGRATIONS_OGPU_INPUT_ROOTS")
        return {
            **{k: os.environ[k] for k in keep if k in os.environ},
            "PREFECT_INTEGRATIONS_OGPU_HOME": str(homes[name]),
            "PREFECT_HOME": str(homes[name] / "prefect"),
            **more,
        }

    for h in homes.values():
        h.mkdir(mode=0o711)
    try:
        # The API host: PostgreSQL and Redis on its loopback, the API server on its address.
        up = [*CLI, "server", "up", "--stack", "production", "--host", hosts.address("api"), "--json"]
        api_url = json_of(hosts.run("api", up, env("api")))["api_urls"][0]
        assert api_url.startswith(f"http://{hosts.address('api')}:"), api_url
        # The chain host: anvil on its address, the protocol deployed and funded.
        chain_up = [*CLI, "devnet", "up", "--host", hosts.address("chain"), "--json"]
        profile = json_of(hosts.run("chain", chain_up, env("chain")))
        assert profile["rpc_url"].startswith(f"http://{hosts.address('chain')}:"), profile["rpc_url"]
        ipfs = start_storage(hosts, env("store"), tmp_path)

        client_env = env("client", PREFECT_API_URL=api_url)
        source = step(hosts, "setup", client_env, profile=profile, ipfs=ipfs, prefix=PREFIX)["source"]
        from ogpu_prefect.worker.worker import worker_command

        for name, role in WORKERS.items():
            worker_env = env(name, PREFECT_API_URL=api_url, PREFECT_WORKER_QUERY_SECONDS="2")
            cmd = worker_command(f"{PREFIX}-{role}", f"{PREFIX}-{role}")
            hosts.spawn(name, cmd, worker_env, tmp_path / f"worker-{name}.log", cwd=REPO)
        step(hosts, "registered", client_env, profile=profile, source=source, roles=list(WORKERS.values()))

        results = run_flow_elsewhere(
            api_url, "run_batch", source, [{"i": i} for i in range(6)], 10**16,
            f"{PREFIX}-net", f"{PREFIX}-client", f"{PREFIX}-store",
            function_name="echo", task_timeout=120, via=hosts.command("client", []), env=client_env, timeout=300,
        )  # fmt: skip
        assert [r.status for r in results] == ["finalized"] * 6, [(r.status, r.error) for r in results]
        # The results were read back from the storage host, where the worker that answered put them.
        assert all((r.data_url or "").startswith(f"{ipfs}/ipfs/") for r in results), [r.data_url for r in results]
        assert all(r.result is not None for r in results), [r.result for r in results]

        # Each task's record, in its provider's pool (written off the money path: soon after).
        roles = {profile["accounts"][role]["address"].lower(): role for role in WORKERS.values()}
        wanted = {(roles[r.provider.lower()], r.task.lower()) for r in results}
        deadline = time.time() + 60
        while True:
            seen = step(hosts, "records", client_env, prefix=PREFIX)
            recorded = {
                (role, run["task"])
                for role, runs in seen["runs"].items()
                for run in runs
                if run["state"] == "COMPLETED"
            }
            if wanted <= recorded or time.time() > deadline:
                break
            time.sleep(1)
        assert wanted <= recorded, (wanted - recorded, seen["runs"])
        assert seen["ui_api_url"] == api_url  # the UI, opened from any host, calls the API host
        assert not LOOPBACK.search(seen["configured"]), LOOPBACK.findall(seen["configured"])  # blocks, pools

        assert_listeners(hosts, api_url, profile["rpc_url"], ipfs)
        assert_configuration(hosts)
        assert not LOOPBACK.search(json.dumps(client_env)), client_env
        print("tasks answered per provider:", {role: sum(r == role for r, _ in wanted) for role in WORKERS.values()})
    finally:  # what is left after these is killed with the hosts (the fixture)
        if hosts.pids("api"):
            hosts.run("api", [*CLI, "server", "down"], env("api"), timeout=120, check=False)
        if hosts.pids("chain"):
            hosts.run("chain", [*CLI, "devnet", "down"], env("chain"), timeout=60, check=False)
        shutil.rmtree(root, ignore_errors=True)


def json_of(out: str) -> Any:
    return json.loads(out.strip().splitlines()[-1])


def step(hosts: Hosts, name: str, env: dict[str, str], **args: Any) -> Any:
    """A step of tests/multihost_steps.py, run on the client host."""
    import subprocess

    cmd = hosts.command("client", [PY, "-m", "tests.multihost_steps", name])
    done = subprocess.run(cmd, input=json.dumps(args), env=env, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-4000:]
    return json_of(done.stdout)


def start_storage(hosts: Hosts, env: dict[str, str], tmp_path: Path) -> str:
    """The storage host's HTTP storage; its base URL."""
    import subprocess

    log = tmp_path / "store.log"
    name = hosts.host_name("store")  # by its internal name, as the operators' allowed origins say
    stub = hosts.spawn("store", [PY, "-m", "tests.ipfs_stub", hosts.address("store"), name], env, log,
                       stdin=subprocess.PIPE, cwd=REPO)  # fmt: skip
    deadline = time.time() + 30
    while not (port := log.read_text().strip()):
        assert stub.poll() is None and time.time() < deadline, log.read_text()
        time.sleep(0.1)
    return f"http://{name}:{int(port)}"


def assert_listeners(hosts: Hosts, api_url: str, rpc_url: str, ipfs: str) -> None:
    """What other hosts reach listens on its host's address; on loopback only what serves its own
    host (`ss -ltnp` in each)."""
    served = {"api": api_url, "chain": rpc_url, "store": ipfs}
    local_only = {"api": {"postgres", "redis-server"}, "w1": {"python"}, "w2": {"python"}}
    for name in HOSTS:
        listening = hosts.listening(name)
        if name in served:
            port = int(served[name].split(":")[2].split("/")[0])  # the storage is named, but listens on its address
            assert (hosts.address(name), port) in [(a, p) for a, p, _ in listening], (name, listening)
        for address, port, program in listening:
            assert address not in ("0.0.0.0", "*", "::"), (name, address, port, program)  # loopback included
            if LOOPBACK.fullmatch(address) or address == "::1":
                assert any(program.startswith(p) for p in local_only.get(name, ())), (name, address, port, program)
            else:
                assert address == hosts.address(name), (name, address, port, program)


def assert_configuration(hosts: Hosts) -> None:
    """No process on any host was told a loopback address, except PostgreSQL's and Redis's to the
    API's processes beside them and a worker's callback URL to its own service."""
    for name in HOSTS:
        for pid in hosts.pids(name):
            config = proc_config(pid)
            program = config.get("argv", "").split(" ", 1)[0].rsplit("/", 1)[-1].rstrip(":")  # "postgres: ..." titles
            for key, value in config.items():
                if not LOOPBACK.search(value):
                    continue
                same_host = (
                    name == "api" and (key in SAME_HOST_SETTINGS or program in ("postgres", "redis-server"))
                ) or (name in WORKERS and OWNER_VAR in config and key == "CALLBACK_URL")
                assert same_host, (name, pid, program, key, value[:300])


def proc_config(pid: int) -> dict[str, str]:
    """A process's environment and command line (what it was configured with)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:  # ended meanwhile
        return {}
    env = dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)
    return {**env, "argv": argv.decode(errors="replace")}
