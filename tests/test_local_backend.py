"""The local hardware backend runs a source written with the official `ogpu.service` API,
unchanged, as a real process on its own port; tasks go over real HTTP and results come back
through the callback receiver; stopping leaves no process behind."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from ogpu_prefect.chain.types import Environment
from ogpu_prefect.compose import ComposeError, ComposeSpec
from ogpu_prefect.plugin_manager import PluginKind, create
from ogpu_prefect.worker.service import CallbackReceiver, ServiceClient, ServiceError

ECHO = Path(__file__).resolve().parents[1] / "flows" / "sources" / "echo" / "docker-compose.cpu.yml"


def test_two_echo_services_side_by_side_answer_through_callbacks() -> None:
    backend = create(PluginKind.HARDWARE_BACKEND, "local")
    assert backend.environments() == Environment.CPU
    lines: list[str] = []
    with CallbackReceiver() as receiver:
        a = backend.start(ComposeSpec.load(ECHO), Environment.CPU, callback_url=receiver.url, log=lines.append)
        b = backend.start(ComposeSpec.load(ECHO), Environment.CPU, callback_url=receiver.url, log=lines.append)
        try:
            assert a.base_url != b.base_url, "each service gets its own port"
            for task in ("0xTaskA", "0xTaskB", "0xTaskC"):
                receiver.expect(task)
            ServiceClient(a.base_url).submit("echo", "0xTaskA", {"text": "hello", "n": 1})
            ServiceClient(b.base_url).submit("echo", "0xTaskB", {"text": "world"})
            assert receiver.wait("0xTaskA", time.time() + 20) == {"echo": {"text": "hello", "n": 1}, "upper": "HELLO"}
            assert receiver.wait("0xtaskb", time.time() + 20)["upper"] == "WORLD"
            with pytest.raises(ServiceError, match="422"):
                ServiceClient(a.base_url).submit("echo", "0xTaskC", {"text": ["not", "a", "string"]})
            with pytest.raises(ServiceError, match="404"):
                ServiceClient(a.base_url).submit("nope", "0xTaskD", {})
            with pytest.raises(ServiceError, match="no result"):
                receiver.wait("0xTaskC", time.time() + 0.5)
        finally:
            a.stop()
            b.stop()
    assert not a.alive() and not b.alive()
    for pid in (a.pid, b.pid):
        with pytest.raises(ProcessLookupError):
            os.killpg(pid, 0)
    assert any("echo: 2 field(s)" in line for line in lines), "service output streams to the log sink"


def test_a_compose_file_without_the_extension_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "compose.yml"
    f.write_text("services:\n  app:\n    image: some/image\n")
    with pytest.raises(ComposeError, match="x-ogpu-local"):
        create(PluginKind.HARDWARE_BACKEND, "local").start(
            ComposeSpec.load(f), Environment.CPU, callback_url="http://127.0.0.1:9", log=print
        )
    with pytest.raises(ValueError, match="CPU only"):
        create(PluginKind.HARDWARE_BACKEND, "local").start(
            ComposeSpec.load(ECHO), Environment.NVIDIA, callback_url="http://127.0.0.1:9", log=print
        )


def test_a_service_that_dies_at_start_is_reported(tmp_path: Path) -> None:
    f = tmp_path / "compose.yml"
    f.write_text("services:\n  app:\n    x-ogpu-local:\n      command: python -c 'raise SystemExit(3)'\n")
    with pytest.raises(ServiceError, match="exited with 3"):
        create(PluginKind.HARDWARE_BACKEND, "local").start(
            ComposeSpec.load(f), Environment.CPU, callback_url="http://127.0.0.1:9", log=print
        )


def test_a_callback_no_one_waits_for_is_dropped() -> None:
    """A service's late answer (its waiter gave up: the task was won by another provider, or the
    deadline passed) is neither kept nor handed to a later execution at the same address (a task
    address comes back after a devnet revert)."""
    import requests

    from ogpu_prefect.worker.provider import TakenReason, TaskTakenError

    with CallbackReceiver() as receiver:
        receiver.expect("0xT1")
        assert receiver.cancel("0xT1", TaskTakenError("0xT1", TakenReason.FINALIZED_ELSEWHERE), if_expected=True)
        with pytest.raises(TaskTakenError):
            receiver.wait("0xT1", time.time() + 5)
        assert requests.post(f"{receiver.url}/0xT1", json={"late": True}, timeout=5).status_code == 200
        receiver.expect("0xT1")  # the address again, as a new task
        with pytest.raises(ServiceError, match="no result"):
            receiver.wait("0xT1", time.time() + 0.3)
        assert not receiver.cancel("0xT2", if_expected=True), "nothing to cancel: no work sent"
        receiver.expect("0xT2")
        assert requests.post(f"{receiver.url}/0xT2", json={"ok": 1}, timeout=5).status_code == 200
        assert receiver.wait("0xT2", time.time() + 5) == {"ok": 1}


def test_reap_stops_a_dead_predecessors_services_and_not_those_of_the_same_key_elsewhere() -> None:
    """Two workers with one key on two devnets of this host (same chain id, same keys: two test
    sessions, or a bench beside a demo) each own their services: a starting worker reaps only what a
    predecessor with its own key, chain and Prefect API left."""
    from ogpu_prefect.backends import owner_tag

    address = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
    here, there = (
        owner_tag(address, 31337, "http://127.0.0.1:4301/api"),
        owner_tag(address, 31337, "http://127.0.0.1:4302/api"),
    )
    assert here != there and here.startswith(address.lower())
    assert owner_tag(address, 31337, "http://127.0.0.1:4301/api/") == here
    assert owner_tag(address, 1, "http://127.0.0.1:4301/api") != here
    with CallbackReceiver() as receiver:
        mine = create(PluginKind.HARDWARE_BACKEND, "local", owner=here)
        other = create(PluginKind.HARDWARE_BACKEND, "local", owner=there)
        left = mine.start(ComposeSpec.load(ECHO), Environment.CPU, callback_url=receiver.url, log=lambda _: None)
        kept = other.start(ComposeSpec.load(ECHO), Environment.CPU, callback_url=receiver.url, log=lambda _: None)
        try:
            successor = create(PluginKind.HARDWARE_BACKEND, "local", owner=here)
            assert successor.reap() == 1
            deadline = time.time() + 10
            while left.alive() and time.time() < deadline:
                time.sleep(0.05)
            assert not left.alive(), "the predecessor's service is stopped"
            assert kept.alive() and ServiceClient(kept.base_url).ready(), "the other worker's service is not"
        finally:
            left.stop()
            kept.stop()
