"""The wheel, as a user gets it: built from the repository, installed in a fresh virtualenv outside
it, beside a project that has its own `flows/` package. From there Prefect finds the worker type
and the blocks, the flows and plugins import under the package's name, and the wheel's only
top-level name is the project's."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CHECK = textwrap.dedent("""
    import json
    from prefect.blocks.core import Block
    from prefect.plugins import load_prefect_collections
    from prefect.utilities.dispatch import get_registry_for_type, lookup_type
    from prefect.workers.base import BaseWorker

    load_prefect_collections()
    worker = lookup_type(BaseWorker, "ogpu-provider")
    blocks = sorted(b.get_block_type_slug() for b in (get_registry_for_type(Block) or {}).values()
                    if b.__module__.startswith("ogpu_prefect"))
    from ogpu_prefect.flows.run_batch import run_batch
    import ogpu_prefect.plugins.first_response as first_response
    from ogpu_prefect.plugin_manager import PluginKind, installed
    import flows  # the user's own package, not ours
    print(json.dumps({"worker": worker.__name__, "blocks": blocks, "flow": run_batch.name,
                      "delivery": sorted(installed(PluginKind.DELIVERY_METHOD)),
                      "backends": sorted(installed(PluginKind.HARDWARE_BACKEND)),
                      "policies": sorted(installed(PluginKind.TASK_POLICY)), "user_flows": flows.MARK,
                      "plugin_file": first_response.__file__}))
""")


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path  # the wheel installed in it, nothing else of the repository
    project: Path  # a user's project, with its own `flows/` package


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not installed (the set-up installs it)")
    tmp_path = tmp_path_factory.mktemp("wheel")
    dist = tmp_path / "dist"
    subprocess.run(
        [uv, "build", "--wheel", "--out-dir", str(dist), str(ROOT)], check=True, capture_output=True, timeout=300
    )
    [wheel] = dist.glob("*.whl")
    project = tmp_path / "my-project"
    (project / "flows").mkdir(parents=True)
    (project / "flows" / "__init__.py").write_text('MARK = "mine"\n')
    venv = tmp_path / "venv"
    subprocess.run([uv, "venv", "--python", sys.executable, str(venv)], check=True, capture_output=True, timeout=120)
    overrides = tmp_path / "overrides.txt"
    overrides.write_text("certifi==2026.10.18\n")  # as pyproject's [tool.uv]: the newest the registry serves
    install = subprocess.run(
        [uv, "pip", "install", "--python", str(venv / "bin" / "python"), "--override", str(overrides), str(wheel)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    return Installed(wheel, venv, project)


@pytest.mark.slow
def test_the_wheel_installs_beside_a_users_project(installed: Installed, tmp_path: Path) -> None:
    wheel, project, python = installed.wheel, installed.project, installed.venv / "bin" / "python"
    top = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert top == {"ogpu_prefect", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info"}, top
    names = zipfile.ZipFile(wheel).namelist()
    # the repository's flows/ and plugins/ folders, built under the package's name (no symlink)
    for name in (
        "ogpu_prefect/flows/run_batch.py",
        "ogpu_prefect/plugins/first_response.py",
        "ogpu_prefect/flows/data/sentences.txt",
    ):
        assert name in names, name
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]

    run = subprocess.run(
        [str(python), "-c", CHECK],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PREFECT_HOME": str(tmp_path / "ph")},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    found = json.loads(run.stdout.strip().splitlines()[-1])
    assert found["worker"] == "OGPUProviderWorker"
    assert found["blocks"] == ["ogpu-network", "ogpu-storage", "ogpu-wallet"]
    assert found["flow"] == "ogpu-run-batch"
    assert found["delivery"] == ["auction", "consensus", "first_response", "manual"]
    assert found["backends"] == ["docker", "local"]
    assert found["policies"] == ["take_all", "threshold"]
    assert found["user_flows"] == "mine"
    assert found["plugin_file"].startswith(str(installed.venv)), found[
        "plugin_file"
    ]  # the wheel's, not the repository's


ANVIL = ROOT / "contracts" / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"
SETTING = "PREFECT_INTEGRATIONS_OGPU_ANVIL"


def rpc(url: str, method: str, *params: object) -> object:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as r:
        return json.loads(r.read())["result"]


@pytest.mark.slow
def test_the_wheels_devnet_up_says_what_to_install_then_runs_with_the_setting(
    installed: Installed, tmp_path: Path
) -> None:
    """A pip user has no contracts/ folder: without anvil, `devnet up` is one line naming what to
    install (exit 2, no traceback); with the setting pointing at an anvil, the wheel's own
    artifacts (ABIs + bytecode) deploy a working devnet, and `devnet down` stops it."""
    if not ANVIL.exists():
        pytest.skip("the set-up's anvil is not installed (npm --prefix contracts ci)")
    if shutil.which("anvil", path="/usr/bin:/bin") or any(
        Path(d, "node_modules/@foundry-rs/anvil-linux-amd64").exists() for d in ("/usr/local/lib", "/usr/lib")
    ):
        pytest.skip("this machine has an anvil installed globally")
    names = zipfile.ZipFile(installed.wheel).namelist()
    for contract in ("Nexus", "Controller", "Vault", "Terminal", "Source", "Task", "Response", "Manager"):
        assert f"ogpu_prefect/chain/artifacts/{contract}.json" in names, contract
    cli = str(installed.venv / "bin" / "ogpu-prefect")
    env = {"PATH": f"{installed.venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path), "PREFECT_HOME": str(tmp_path)}

    def run(*args: str, **more: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [cli, "devnet", *args],
            cwd=installed.project,
            env={**env, **more},
            capture_output=True,
            text=True,
            timeout=180,
        )

    missing = run("up")
    assert missing.returncode == 2, (missing.stdout, missing.stderr)
    assert missing.stderr.count("\n") == 1 and "Traceback" not in missing.stderr, missing.stderr
    assert "npm install @foundry-rs/anvil-linux-amd64@1.7.1" in missing.stderr and SETTING in missing.stderr

    up = run("up", "--json", **{SETTING: str(ANVIL)})
    assert up.returncode == 0, up.stderr[-3000:]
    profile = json.loads(up.stdout)
    try:
        assert int(str(rpc(profile["rpc_url"], "eth_chainId")), 16) == profile["chain_id"] == 31337
        for name, address in profile["contracts"].items():
            assert rpc(profile["rpc_url"], "eth_getCode", address, "latest") not in ("0x", None), name
        assert run("status").returncode == 0
        down = run("down")
        assert down.returncode == 0, down.stderr
        deadline = time.monotonic() + 10
        while Path(f"/proc/{profile['anvil_pid']}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not Path(f"/proc/{profile['anvil_pid']}").exists(), "devnet down stopped the anvil"
    finally:
        if (
            Path(f"/proc/{profile['anvil_pid']}/cmdline").exists()
            and b"anvil" in Path(f"/proc/{profile['anvil_pid']}/cmdline").read_bytes()
        ):
            os.kill(profile["anvil_pid"], signal.SIGKILL)
