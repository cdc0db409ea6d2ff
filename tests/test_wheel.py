"""The wheel, as a user gets it: built from the repository, installed in a fresh virtualenv outside
it, beside a project that has its own `flows/` package. From there Prefect finds the worker type
and the blocks, the flows and plugins import under the package's name, and the wheel's only
top-level name is the project's."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import zipfile
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
    from ogpu_prefect.plugin_manager import PluginKind, installed
    import flows  # the user's own package, not ours
    print(json.dumps({"worker": worker.__name__, "blocks": blocks, "flow": run_batch.name,
                      "delivery": sorted(installed(PluginKind.DELIVERY_METHOD)),
                      "backends": sorted(installed(PluginKind.HARDWARE_BACKEND)),
                      "policies": sorted(installed(PluginKind.TASK_POLICY)), "user_flows": flows.MARK}))
""")


@pytest.mark.slow
def test_the_wheel_installs_beside_a_users_project(tmp_path: Path) -> None:
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not installed (the set-up installs it)")
    dist = tmp_path / "dist"
    subprocess.run(
        [uv, "build", "--wheel", "--out-dir", str(dist), str(ROOT)], check=True, capture_output=True, timeout=300
    )
    [wheel] = dist.glob("*.whl")
    top = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert top == {"ogpu_prefect", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info"}, top

    project = tmp_path / "my-project"
    (project / "flows").mkdir(parents=True)
    (project / "flows" / "__init__.py").write_text('MARK = "mine"\n')
    venv = tmp_path / "venv"
    subprocess.run([uv, "venv", "--python", sys.executable, str(venv)], check=True, capture_output=True, timeout=120)
    python = venv / "bin" / "python"
    overrides = tmp_path / "overrides.txt"
    overrides.write_text("certifi==2026.10.18\n")  # as pyproject's [tool.uv]: the newest the registry serves
    install = subprocess.run(
        [uv, "pip", "install", "--python", str(python), "--override", str(overrides), str(wheel)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    run = subprocess.run(
        [str(python), "-c", CHECK],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PREFECT_HOME": str(tmp_path / "ph")},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    import json

    found = json.loads(run.stdout.strip().splitlines()[-1])
    assert found["worker"] == "OGPUProviderWorker"
    assert found["blocks"] == ["ogpu-network", "ogpu-storage", "ogpu-wallet"]
    assert found["flow"] == "ogpu-run-batch"
    assert found["delivery"] == ["auction", "consensus", "first_response", "manual"]
    assert found["backends"] == ["docker", "local"]
    assert found["policies"] == ["take_all", "threshold"]
    assert found["user_flows"] == "mine"
