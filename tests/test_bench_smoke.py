"""Every benchmark in bench/ still runs: `python bench/<name>.py --smoke` as a real subprocess (its
own devnet, Prefect server and workers, as a full run has, at tiny sizes) exits 0 and ends with
its key=value line. The benches are found by glob, so a new one without `--smoke` fails here."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCHES = sorted(p.name for p in (REPO / "bench").glob("*.py") if not p.name.startswith("_"))
KEY_VALUES = re.compile(r"[a-z][a-z0-9_]*=\S+( [a-z][a-z0-9_]*=\S+)*")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]


def test_the_benches_are_found() -> None:
    assert {"e2e.py", "gas.py", "micro.py", "reliability.py"} <= set(BENCHES), BENCHES


@pytest.mark.parametrize("bench", BENCHES)
def test_the_bench_runs_as_a_smoke(bench: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}  # its own Prefect, as from a shell
    t0 = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, f"bench/{bench}", "--smoke"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=360,
        )
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else e.stdout or ""
        pytest.fail(f"bench/{bench} --smoke still running after {e.timeout} s: {out[-3000:]}")
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert lines and KEY_VALUES.fullmatch(lines[-1]), f"no final key=value line:\n{done.stdout[-2000:]}"
    print(f"bench/{bench} --smoke: {time.monotonic() - t0:.0f} s; {lines[-1]}")
