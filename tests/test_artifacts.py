"""The shipped artifacts and generated wrappers are what the sources compile to."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "ogpu_prefect" / "chain" / "artifacts"


def test_manifest_hashes_match_the_sources() -> None:
    manifest = json.loads((ARTIFACTS / "manifest.json").read_text())
    sources = {
        f"src/{p.name}": hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((REPO / "contracts" / "src").glob("*.sol"))
    }
    assert manifest["sources"] == sources, "stale artifacts: run `node contracts/tools/build.js`"
    assert manifest["compiler"].startswith("0.8.37")
    for name, size in manifest["sizes"].items():
        assert size <= 24_576, f"{name} is over the EIP-170 code size limit"


@pytest.mark.stack  # compiles the contracts (solc-js)
def test_a_fresh_compile_reproduces_the_artifacts() -> None:
    node = shutil.which("node")
    if node is None or not (REPO / "contracts" / "node_modules" / "solc").exists():
        pytest.fail("node and contracts/node_modules are part of the set-up: run ./dev test")
    proc = subprocess.run(
        [node, "contracts/tools/build.js", "--check"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.stack  # runs the generator in a subprocess
def test_generated_wrappers_are_fresh() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ogpu_prefect.chain._codegen", "--check"], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
