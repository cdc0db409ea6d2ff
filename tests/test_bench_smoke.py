"""Every benchmark in bench/ still runs: `python bench/<name>.py --smoke` as a real subprocess (its
own devnet, Prefect server and workers, as a full run has, at tiny sizes) exits 0 and ends with
its key=value line. The benches are found by glob, so a new one without `--smoke` fails here.

The selected benches start together when the first test begins, AT_ONCE at a time: much of a
smoke is waiting for servers and workers to start, so two side by side take little longer than one."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCHES = sorted(p.name for p in (REPO / "bench").glob("*.py") if not p.name.startswith("_"))
KEY_VALUES = re.compile(r"[a-z][a-z0-9_]*=\S+( [a-z][a-z0-9_]*=\S+)*")
AT_ONCE = 2
LIMIT_S = 360

pytestmark = [pytest.mark.slow, pytest.mark.timeout(LIMIT_S + 60)]


def smoke(bench: str) -> tuple[bool, str, float]:
    """Runs `bench/<bench> --smoke`: (passed, its key=value line or what went wrong, seconds)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}  # its own Prefect, as from a shell
    t0 = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, f"bench/{bench}", "--smoke"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=LIMIT_S,
        )
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else e.stdout or ""
        return False, f"still running after {LIMIT_S} s: {out[-3000:]}", time.monotonic() - t0
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    if done.returncode:
        return False, f"exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}", time.monotonic() - t0
    if not (lines and KEY_VALUES.fullmatch(lines[-1])):
        return False, f"no final key=value line:\n{done.stdout[-2000:]}", time.monotonic() - t0
    return True, lines[-1], time.monotonic() - t0


@pytest.fixture(scope="module")
def smokes(request: pytest.FixtureRequest) -> Iterator[dict[str, Future[tuple[bool, str, float]]]]:
    selected = [
        item.callspec.params["bench"]
        for item in request.session.items
        if item.module is request.module and hasattr(item, "callspec") and "bench" in item.callspec.params
    ]
    with ThreadPoolExecutor(AT_ONCE) as pool:
        yield {bench: pool.submit(smoke, bench) for bench in selected}  # in the tests' order


def test_the_benches_are_found() -> None:
    assert {"e2e.py", "gas.py", "micro.py", "reliability.py", "worker.py"} <= set(BENCHES), BENCHES


@pytest.mark.parametrize("bench", BENCHES)
def test_the_bench_runs_as_a_smoke(bench: str, smokes: dict[str, Future[tuple[bool, str, float]]]) -> None:
    passed, text, seconds = smokes[bench].result()
    assert passed, f"bench/{bench} --smoke: {text}"
    print(f"bench/{bench} --smoke: {seconds:.0f} s; {text}")
