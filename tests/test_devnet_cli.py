"""`ogpu-prefect devnet up/status/down` as a user runs them: real processes, a detached anvil."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ogpu_prefect.chain.connection import Chain
from ogpu_prefect.chain.network import Network

pytestmark = pytest.mark.stack  # starts anvil through the CLI


def cli(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PREFECT_INTEGRATIONS_OGPU_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "ogpu_prefect.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_devnet_up_is_idempotent_and_down_stops_it(tmp_path: Path) -> None:
    up = cli("devnet", "up", "--json", home=tmp_path)
    assert up.returncode == 0, up.stderr
    profile = json.loads(up.stdout)
    try:
        assert profile["chain_id"] == 31337 and profile["rpc_url"].startswith("http://127.0.0.1:")
        assert set(profile["contracts"]) >= {"Nexus", "Controller", "Terminal", "Vault"}
        assert {"client", "provider1", "master"} <= set(profile["accounts"])
        assert all(a["private_key"].startswith("0x") for a in profile["accounts"].values())
        chain = Chain(Network.from_profile(profile))
        assert chain.vault.balance_of(profile["accounts"]["client"]["address"]) > 0
        assert (tmp_path / "devnet.json").stat().st_mode & 0o077 == 0, "profile holds keys: owner-only"

        again = cli("devnet", "up", "--json", home=tmp_path)
        assert json.loads(again.stdout)["anvil_pid"] == profile["anvil_pid"], "second up reuses the devnet"
        human = cli("devnet", "up", home=tmp_path)
        assert "already running" in human.stdout
        assert profile["accounts"]["client"]["private_key"][2:] not in human.stdout, "plain output shows no keys"
        assert cli("devnet", "status", home=tmp_path).returncode == 0
    finally:
        down = cli("devnet", "down", home=tmp_path)
    assert down.returncode == 0 and "stopped" in down.stdout
    assert cli("devnet", "status", home=tmp_path).returncode == 1
    assert not (tmp_path / "devnet.json").exists()


def test_up_refuses_a_port_that_answers_and_down_stops_only_its_own_anvil(tmp_path: Path) -> None:
    """The old code deployed and funded on whatever answered the port, and `down` killed whatever
    pid the profile named."""
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        up = cli("devnet", "up", "--port", str(port), home=tmp_path)
    assert up.returncode == 2 and "--port" in up.stderr and "already answers" in up.stderr, up.stderr
    assert "Traceback" not in up.stderr and not (tmp_path / "devnet.json").exists()

    bystander = subprocess.Popen(["sleep", "60"])
    try:
        profile = {
            "name": "devnet",
            "rpc_url": "http://127.0.0.1:9",
            "chain_id": 31337,
            "anvil_pid": bystander.pid,
            "contracts": {n: "0x" + "11" * 20 for n in ("Nexus", "Controller", "Terminal", "Vault")},
            "accounts": {"client": {"address": "0x" + "22" * 20, "private_key": "0x" + "33" * 32}},
        }
        (tmp_path / "devnet.json").write_text(json.dumps(profile))
        down = cli("devnet", "down", home=tmp_path)
        assert down.returncode == 0 and "left alone" in down.stdout, down.stdout + down.stderr
        assert bystander.poll() is None, "an unrelated process was killed"
    finally:
        bystander.kill()
        bystander.wait()

    (tmp_path / "devnet.json").write_text("{not json")
    corrupt = cli("devnet", "status", home=tmp_path)
    assert corrupt.returncode == 2 and "profile" in corrupt.stderr and "Traceback" not in corrupt.stderr


def test_up_refuses_a_host_that_names_no_host(tmp_path: Path) -> None:
    """`--host` is where anvil and the Prefect API listen and what the URLs handed to other hosts
    carry: a wildcard names no host, and neither command starts anything with it."""
    for cmd in (("devnet", "up"), ("server", "up", "--stack", "production")):
        for host in ("0.0.0.0", "::", "not-an-address"):
            up = cli(*cmd, "--host", host, home=tmp_path)
            assert up.returncode == 2 and "--host" in up.stderr, up.stderr
    assert not (tmp_path / "devnet.json").exists() and not (tmp_path / "stack").exists()
