"""Runs the Solidity test suite (contracts/test: lifecycle, an unauthorized caller for every
state-changing function, Vault invariants) with forge, offline, on the pinned solc-js."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.stack  # runs forge

CONTRACTS = Path(__file__).resolve().parents[1] / "contracts"
FORGE = CONTRACTS / "node_modules/@foundry-rs/forge-linux-amd64/bin/forge"


def test_forge_suite_passes() -> None:
    if not FORGE.exists():
        pytest.fail("forge missing: the set-up installs it (npm --prefix contracts ci)")
    proc = subprocess.run([str(FORGE), "test"], cwd=CONTRACTS, capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    passed = sum(int(n) for n in re.findall(r"(\d+) tests passed", out))
    assert passed >= 20, out[-2000:]
    assert "invariantVaultIsSolvent" in out
