"""The README's first command, as a newcomer runs it: `./dev demo` as a real subprocess (not a
`temporary_settings` wrapper), from a shell whose PREFECT_API_URL points somewhere else (a dead port
here; a user's Prefect Cloud workspace or team server in life) and whose Prefect home is the user's.
The demo must use only the server it starts, write nothing into the user's Prefect, never start a
temporary server, and print no traceback; while it is kept up, the CLI reaches its chain by the
blocks it saved."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.stack  # runs ./dev demo: anvil and a Prefect server

ROOT = Path(__file__).resolve().parents[1]
FOREIGN_API = "http://127.0.0.1:9/api"


def _clean_env(**more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(more)
    return env


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "ogpu_prefect.cli", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_the_demo_uses_only_its_own_prefect_and_the_cli_reaches_its_chain(tmp_path: Path) -> None:
    user_prefect = tmp_path / "user-prefect-home"  # the user's own Prefect home: must stay untouched
    env = _clean_env(
        PREFECT_API_URL=FOREIGN_API,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="1",
        PREFECT_HOME=str(user_prefect),
        PREFECT_INTEGRATIONS_OGPU_HOME=str(tmp_path / "ogpu"),
    )
    demo = subprocess.Popen(
        [str(ROOT / "dev"), "demo", "--tasks", "20", "--keep"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    kept = threading.Event()

    def read() -> None:
        assert demo.stdout is not None
        for line in demo.stdout:
            lines.append(line)
            if line.startswith("--keep: everything stays up"):
                kept.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 600
        while not kept.is_set() and demo.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        out = "".join(lines)
        assert kept.is_set(), out[-4000:]
        assert "batch done: 2/2 finalized" in out, out[-4000:]
        hint = re.search(r"PREFECT_API_URL=(\S+) uv run ogpu-prefect vault balance --network (\S+) --wallet (\S+)", out)
        assert hint, out[-2000:]
        api, network, wallet = hint.groups()
        assert api != FOREIGN_API

        # The CLI reaches the demo's chain through the blocks it saved, by name and by type slug.
        cli_env = _clean_env(PREFECT_API_URL=api, PREFECT_HOME=str(tmp_path / "cli-prefect-home"))
        for net in (network, f"ogpu-network/{network}"):
            done = _cli("vault", "balance", "--network", net, "--wallet", wallet, "--json", env=cli_env)
            assert done.returncode == 0, done.stderr
            assert int(json.loads(done.stdout)["balance"]["wei"]) > 0, done.stdout
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGINT)
        try:
            code = demo.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(demo.pid, signal.SIGKILL)
            raise
        reader.join(timeout=10)
        from ogpu_prefect.stack import PrefectStack

        PrefectStack(tmp_path / "ogpu" / "demo").stop()  # whatever a failed demo left running
    out = "".join(lines)
    assert code == 130, out[-3000:]  # Ctrl-C after --keep
    assert "Traceback" not in out, out
    assert not re.search(r"temporary server|ephemeral", out, re.IGNORECASE), out
    # Nothing written into the user's Prefect: no home made, no profile, no database.
    assert not user_prefect.exists() or not any(user_prefect.rglob("*")), sorted(user_prefect.rglob("*"))


def test_a_block_lookup_with_no_prefect_api_says_so_in_one_line(tmp_path: Path) -> None:
    """No PREFECT_API_URL and Prefect's default profile (which would start a temporary server for
    30 s and more): the command names the variable and exits 2 instead."""
    env = _clean_env(PREFECT_HOME=str(tmp_path / "prefect"), PREFECT_INTEGRATIONS_OGPU_HOME=str(tmp_path))
    done = _cli("vault", "balance", "--network", "some-saved-network", "--wallet", "some-wallet", env=env)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "PREFECT_API_URL" in lines[0], done.stderr
    assert "Traceback" not in done.stderr and "temporary" not in done.stderr.lower()
