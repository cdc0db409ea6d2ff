"""run_batch and scheduled_batch as deployments, against a real Prefect server (the session's test
harness) and the session's devnet, with stand-in providers (tests/provider_sim.py) serving the
tasks:

(a) served from a subprocess exactly as documented (`python flows/run_batch.py`, `python
    flows/scheduled_batch.py`): each run's process gets the flow pickled by value, so any name
    that only a string annotation used would fail parameter validation there;
(b) deployed from the repository's prefect.yaml (`prefect deploy --all`) to a process work pool,
    run by `prefect worker start` after `prefect deployment run -p ...`.

Runs are started through the API or the CLI with parameters as a user gives them: block names, a
block reference (what the run form sends), amounts as strings with their unit. Each run must
complete and return finalized results, with its name and tags."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ogpu_prefect.storage import LocalStore

from .scenarios import Ctx, save_blocks

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

REPO = Path(__file__).resolve().parents[1]
POOL = "ogpu-flows"  # prefect.yaml's work pool
INPUTS = [{"text": f"sentence {i}"} for i in range(3)]


class Procs:
    """A test's subprocesses, each in its own session with its log file; stopped (SIGINT, then
    SIGKILL) at the end, and their logs' tails shown when something fails."""

    def __init__(self, logs: Path, env: dict[str, str]) -> None:
        self.logs, self.env = logs, env
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.services: tuple[str, ...] = ()  # the long-running ones: their exit fails the test
        logs.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, args: list[str], **env: str) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen(
            args, cwd=REPO, env={**self.env, **env}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        self.procs[name] = proc
        return proc

    def run(self, name: str, args: list[str], timeout: float = 180, **env: str) -> str:
        """Runs a command to its end; its output (it must succeed)."""
        proc = self.start(name, args, **env)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop_one(proc)
        out = (self.logs / f"{name}.log").read_text()
        assert proc.returncode == 0, f"{' '.join(args)} failed ({proc.returncode}):\n{out[-3000:]}"
        return out

    def alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None and name in self.services:
                raise AssertionError(f"{name} exited ({proc.returncode}):\n{self.tail(name)}")

    def tail(self, name: str | None = None, chars: int = 2500) -> str:
        names = [name] if name else list(self.procs)
        return "\n".join(f"--- {n} ---\n{(self.logs / f'{n}.log').read_text()[-chars:]}" for n in names)

    @staticmethod
    def stop_one(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGINT)
                proc.wait(timeout=20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            self.stop_one(proc)


@dataclass
class World:
    ctx: Ctx
    blocks: tuple[str, str, str]  # names of the saved network, wallet and storage blocks
    source: str
    tmp: Path
    procs: Procs


@pytest.fixture
def world(devnet: Any, tmp_path: Path) -> Iterator[World]:
    from prefect.settings import PREFECT_API_URL

    with LocalStore(tmp_path / "payloads") as store:
        ctx = Ctx(devnet, store, tmp_path)
        blocks = save_blocks(ctx, f"deploy-{uuid.uuid4().hex[:8]}")
        env = {
            **os.environ,
            "PREFECT_API_URL": str(PREFECT_API_URL.value()),
            "PREFECT_HOME": str(tmp_path / "prefect-home"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",  # the test reads the runs' return values
            "PREFECT_LOCAL_STORAGE_PATH": str(tmp_path / "results"),
            "PREFECT_RUNNER_POLL_FREQUENCY": "1",
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PWD": str(REPO),  # as a shell in the repository sets it: prefect.yaml's pull step uses it
        }
        procs = Procs(tmp_path / "logs", env)
        try:
            yield World(ctx, blocks, ctx.source(), tmp_path, procs)
        finally:
            procs.stop()


def inbox(world: World) -> Path:
    folder = world.tmp / "inbox"
    folder.mkdir()
    (folder / "monday.json").write_text(json.dumps(INPUTS[:2]))
    (folder / "tuesday.json").write_text(json.dumps(INPUTS[2]))
    return folder


def wait_deployments(world: World, names: list[str], timeout: float = 120) -> dict[str, Any]:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    found: dict[str, Any] = {}
    deadline = time.time() + timeout
    with get_client(sync_client=True) as client:
        while len(found) < len(names):
            for name in names:
                try:
                    found[name] = client.read_deployment_by_name(name)
                except ObjectNotFound:
                    pass
            if len(found) < len(names):
                world.procs.alive()
                assert time.time() < deadline, f"deployments {names} not served:\n{world.procs.tail()}"
                time.sleep(0.5)
    return found


def wait_runs(world: World, ids: list[Any], timeout: float = 300) -> list[Any]:
    from prefect.client.orchestration import get_client

    deadline = time.time() + timeout
    with get_client(sync_client=True) as client:
        while True:
            runs = [client.read_flow_run(i) for i in ids]
            if all(r.state is not None and r.state.is_final() for r in runs):
                return runs
            world.procs.alive()
            assert time.time() < deadline, f"runs not done: {[(r.name, r.state) for r in runs]}\n{world.procs.tail()}"
            time.sleep(1)


def assert_batch_run(world: World, run: Any, n: int) -> None:
    assert run.state.is_completed(), f"{run.name}: {run.state}\n{world.procs.tail()}"
    assert run.name == f"ogpu-batch-{n}-tasks"
    assert {"ogpu", "ogpu-batch"} <= set(run.tags), run.tags
    results = run.state.result()
    assert [r.status for r in results] == ["finalized"] * n, results
    assert [r.result["result"] for r in results] == INPUTS[:n], "results come back in input order"


def assert_inbox_run(world: World, run: Any, folder: Path) -> None:
    assert run.state.is_completed(), f"{run.name}: {run.state}\n{world.procs.tail()}"
    assert run.name == "ogpu-inbox-inbox"
    assert {"ogpu", "ogpu-scheduled-batch"} <= set(run.tags), run.tags
    written = run.state.result()
    assert len(written) == 2, written
    assert sorted(p.name for p in (folder / "done").iterdir()) == ["monday.json", "tuesday.json"]
    monday = json.loads((folder / "results" / "monday.results.json").read_text())
    assert [r["status"] for r in monday] == ["finalized"] * 2
    assert [r["result"]["result"] for r in monday] == INPUTS[:2]


def test_served_flows_run_from_the_api(world: World) -> None:
    """`python flows/run_batch.py` and `python flows/scheduled_batch.py` serve their deployments;
    runs started through the API with block names, a block reference and amounts as strings
    complete with finalized results."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    from ogpu_prefect.blocks import OGPUNetwork
    from ogpu_prefect.tasks import load_block

    net, wallet, storage = world.blocks
    folder = inbox(world)
    py = sys.executable
    world.procs.services = ("serve-run-batch", "serve-scheduled-batch")
    with world.ctx.providers(world.source):
        world.procs.start("serve-run-batch", [py, "flows/run_batch.py"])
        world.procs.start(
            "serve-scheduled-batch",
            [py, "flows/scheduled_batch.py"],
            OGPU_SOURCE=world.source,
            OGPU_BATCH_INBOX=f"file://{folder}",
            OGPU_PAYMENT="10000000000000000 wei",
            OGPU_NETWORK_BLOCK=net,
            OGPU_WALLET_BLOCK=wallet,
            OGPU_STORAGE_BLOCK=storage,
        )
        deployments = wait_deployments(world, ["ogpu-run-batch/run-batch", "ogpu-scheduled-batch/nightly"])
        try:
            network_ref = {"$ref": {"block_document_id": str(OGPUNetwork.load(net)._block_document_id)}}
            batch = run_deployment(
                "ogpu-run-batch/run-batch",
                parameters={
                    "source": world.source,
                    "inputs": INPUTS,
                    "payment": "0.01 OGPU",
                    "network": network_ref,  # as the run form's block picker sends it
                    "wallet": wallet,
                    "storage": storage,
                    "function_name": "echo",
                    "task_timeout": 120,
                    "budget": "1 OGPU",
                },
                timeout=0,
            )
            nightly = run_deployment(
                "ogpu-scheduled-batch/nightly", parameters={"function_name": "echo", "task_timeout": 120}, timeout=0
            )
            runs = wait_runs(world, [batch.id, nightly.id])
        finally:
            with get_client(sync_client=True) as client:  # the next test deploys the same names
                for d in deployments.values():
                    client.delete_deployment(d.id)
    assert_batch_run(world, runs[0], len(INPUTS))
    assert runs[0].parameters["payment"] == "0.01 OGPU", runs[0].parameters
    stored = runs[0].parameters["network"]  # what a failure hook reads back to settle the batch
    assert load_block(OGPUNetwork, stored, "network").rpc_url == OGPUNetwork.load(net).rpc_url
    assert_inbox_run(world, runs[1], folder)


def test_prefect_yaml_deploys_to_a_process_pool(world: World) -> None:
    """`prefect deploy --all` from the repository's prefect.yaml, a process worker, and
    `prefect deployment run -p ...` for each deployment: both complete."""
    from prefect.client.orchestration import get_client

    net, wallet, storage = world.blocks
    folder = inbox(world)
    prefect = [sys.executable, "-m", "prefect"]
    world.procs.run("pool", [*prefect, "work-pool", "create", POOL, "--type", "process", "--overwrite"])
    world.procs.run("deploy", [*prefect, "--no-prompt", "deploy", "--all"])
    deployments = wait_deployments(world, ["ogpu-run-batch/run-batch", "ogpu-scheduled-batch/nightly"], timeout=5)
    for d in deployments.values():
        assert d.work_pool_name == POOL
        assert d.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}]
    assert deployments["ogpu-run-batch/run-batch"].parameters["payment"] == "0.01 OGPU"
    world.procs.services = ("worker",)
    with world.ctx.providers(world.source):
        world.procs.start("worker", [*prefect, "worker", "start", "--pool", POOL, "--type", "process"])
        blocks = [f"network={net}", f"wallet={wallet}", f"storage={storage}"]
        common = ["-p", f"source={world.source}", "-p", "function_name=echo", "-p", "task_timeout=120"]
        common += [arg for b in blocks for arg in ("-p", b)]
        started = [
            world.procs.start(
                "run-batch",
                [*prefect, "deployment", "run", "ogpu-run-batch/run-batch", *common]
                + ["-p", f"inputs={json.dumps(INPUTS)}", "-p", "payment=10000000000000000 wei"],
            ),
            world.procs.start(
                "run-nightly",
                [*prefect, "deployment", "run", "ogpu-scheduled-batch/nightly", *common]
                + ["-p", f"inbox=file://{folder}", "-p", "payment=0.01 OGPU"],
            ),
        ]
        ids = []
        for name, proc in zip(("run-batch", "run-nightly"), started):
            assert proc.wait(timeout=120) == 0, world.procs.tail(name)
            out = (world.procs.logs / f"{name}.log").read_text()
            ids.append(re.search(r"UUID: ([0-9a-f-]{36})", out).group(1))  # type: ignore[union-attr]
        runs = wait_runs(world, ids)
    assert_batch_run(world, runs[0], len(INPUTS))
    assert runs[0].parameters["payment"] == "10000000000000000 wei"
    assert_inbox_run(world, runs[1], folder)
    with get_client(sync_client=True) as client:
        assert client.read_work_pool(POOL).type == "process"
