"""The everyday commands (`ogpu-prefect source|task|vault|provider ...`) driven in-process against
the session devnet, with its profile written where `devnet up` would (PREFECT_INTEGRATIONS_OGPU_HOME),
so every command runs with no flags as a user's would. Each `--json` output is one object that
matches the chain; no private key appears in any output; bad flags exit 2 naming the option,
without a traceback. The read paths run through the ABI firewall: the real network's views only."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ogpu_prefect.chain.connection import Chain
from ogpu_prefect.chain.devnet import DEV_KEYS, Devnet, write_profile
from ogpu_prefect.chain.network import profile_path
from ogpu_prefect.chain.rpc import Rpc
from ogpu_prefect.chain.types import DeliveryMethod, ResponseStatus, SourceStatus, TaskStatus
from ogpu_prefect.cli import main
from ogpu_prefect.cli.context import DEFAULTS, HOME_ENV
from ogpu_prefect.cli.output import Progress, money, parse_amount
from ogpu_prefect.inspect import get_task_responses, snapshot_source, snapshot_task
from ogpu_prefect.storage import LocalStore

from .abi_firewall import AbiFirewall
from .provider_sim import SimProvider

ETHER = 10**18
KEYS = [k[2:].lower() for k in DEV_KEYS]
COMPOSE = "http://127.0.0.1:9/docker-compose.yml"


@dataclass
class Run:
    code: int | str | None
    out: str
    err: str

    def json(self) -> dict[str, Any]:
        assert self.code == 0, self.err
        lines = [line for line in self.out.splitlines() if line.strip()]
        assert len(lines) == 1, f"--json printed {len(lines)} lines"
        value = json.loads(lines[0])
        assert isinstance(value, dict)
        return value


@dataclass
class World:
    devnet: Devnet
    chain: Chain
    home: Path
    capsys: pytest.CaptureFixture[str]

    def cli(self, *argv: str) -> Run:
        try:
            code: int | str | None = main(list(argv))
        except SystemExit as e:  # argparse's refusals
            code = e.code
        captured = self.capsys.readouterr()
        run = Run(code, captured.out, captured.err)
        text = (run.out + run.err).lower()
        assert not any(k in text for k in KEYS), f"a private key in the output of {argv}"
        assert "traceback" not in text, run.err
        return run

    def ok(self, *argv: str) -> dict[str, Any]:
        return self.cli(*argv, "--json").json()

    def address(self, role: str) -> str:
        return self.devnet.address(role)

    def source(self, method: str = "manual", **flags: str) -> str:
        argv = ["source", "publish", "--name", "echo", "--cpu", COMPOSE, "--min-payment", "0.01ogpu"]
        argv += ["--delivery-method", method]
        for k, v in flags.items():
            argv += [f"--{k.replace('_', '-')}", v]
        return str(self.ok(*argv)["address"])


@pytest.fixture
def world(devnet: Devnet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> World:
    monkeypatch.setenv(HOME_ENV, str(tmp_path))
    monkeypatch.chdir(tmp_path)
    write_profile(devnet, profile_path(tmp_path))
    return World(devnet, Chain(devnet.network), tmp_path, capsys)


def advance(devnet: Devnet, seconds: int) -> None:
    rpc = Rpc(devnet.rpc_url)
    rpc.call("evm_increaseTime", [seconds])
    rpc.call("evm_mine")


# ---- no chain ----


def test_help_lists_the_groups_quickly() -> None:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "ogpu_prefect.cli", "--help"], capture_output=True, text=True)
    elapsed = time.monotonic() - started
    assert done.returncode == 0
    for group in ("source", "task", "vault", "provider", "devnet"):
        assert group in done.stdout
    assert "later" not in done.stdout
    assert elapsed < 2, f"--help took {elapsed:.2f}s"


def test_amounts_parse_and_print_in_both_units() -> None:
    assert parse_amount("1.5ogpu") == parse_amount("1.5 OGPU") == 15 * 10**17
    assert parse_amount("0.01 OGPU") == 10**16
    assert parse_amount("10000 wei") == parse_amount("10000") == 10000
    assert parse_amount("10 gwei") == 10**10
    digits_key = "1" * 64
    for bad in ("", "1.5", "1e18", "-1", "1.5.3", "0.0000000000000000001ogpu", DEV_KEYS[1], digits_key, "2ETH"):
        with pytest.raises(ValueError) as info:
            parse_amount(bad)
        assert DEV_KEYS[1][2:] not in str(info.value) and digits_key not in str(info.value)
    assert money(15 * 10**17) == {"wei": 15 * 10**17, "ogpu": "1.5"}
    assert money(1) == {"wei": 1, "ogpu": "0.000000000000000001"}


def test_progress_bar_only_on_a_terminal() -> None:
    class Tty:
        def __init__(self, tty: bool) -> None:
            self.text, self.tty = "", tty

        def isatty(self) -> bool:
            return self.tty

        def write(self, s: str) -> None:
            self.text += s

        def flush(self) -> None:
            pass

    term, pipe = Tty(True), Tty(False)
    for stream in (term, pipe):
        with Progress(5, "publishing", stream) as bar:  # type: ignore[arg-type]
            for i in range(1, 6):
                bar.update(i)
    assert "publishing [" in term.text and "5/5" in term.text and term.text.endswith("\n")
    assert pipe.text == ""


def test_setting_defaults_agree_with_ogpu_settings() -> None:
    from ogpu_prefect.settings import OGPUSettings

    fields = OGPUSettings.model_fields
    assert {name: fields[name].default for name in DEFAULTS} == DEFAULTS


# ---- vault ----


def test_vault_balance_defaults_to_the_devnet_client(world: World) -> None:
    out = world.ok("vault", "balance")
    client = world.address("client")
    v = world.chain.vault
    assert out["address"] == client and out["network"] == "devnet"
    assert out["balance"] == money(v.balance_of(client)) and out["balance"]["ogpu"] == "1000"
    assert out["lockup"] == money(v.lockup_of(client)) and out["eligible"] is v.is_eligible(client)
    assert out["frozen_payment"] == money(0) and out["min_lockup_per_source"] == money(ETHER)
    provider = world.ok("vault", "balance", world.address("provider1"))
    assert provider["lockup"] == money(20 * ETHER)
    human = world.cli("vault", "balance")
    assert human.code == 0 and "balance: 1000 OGPU (1000000000000000000000 wei)" in human.out


def test_vault_moves(world: World) -> None:
    v, client, other = world.chain.vault, world.address("client"), world.address("client2")
    before = v.balance_of(client)
    out = world.ok("vault", "deposit", "--amount", "1.5ogpu")
    assert out["amount"] == money(15 * 10**17) and out["vault"]["balance"] == money(before + 15 * 10**17)
    assert v.balance_of(client) == before + 15 * 10**17
    out = world.ok("vault", "deposit", "--amount", "10000 wei", "--to", other)
    assert out["account"] == other and v.balance_of(other) == 1000 * ETHER + 10000
    world.ok("vault", "withdraw", "--amount", "0.5 OGPU")
    assert v.balance_of(client) == before + ETHER
    world.ok("vault", "lock", "--amount", "3ogpu")
    assert v.lockup_of(client) == 3 * ETHER
    world.ok("vault", "unbond", "--amount", "2ogpu")
    assert (v.lockup_of(client), v.unbonding_of(client)) == (ETHER, 2 * ETHER)
    assert world.ok("vault", "cancel-unbonding")["vault"]["lockup"] == money(3 * ETHER)
    world.ok("vault", "unbond", "--amount", "1ogpu")
    early = world.cli("vault", "claim")
    assert early.code == 1 and "UnbondingNotElapsed" in early.err and early.out == ""
    advance(world.devnet, 61)
    out = world.ok("vault", "claim")
    assert out["vault"]["unbonding"] == money(0) and v.balance_of(client) == before + ETHER - 2 * ETHER


def test_keys_from_the_environment_a_file_or_a_profile_role(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_OGPU_KEY", world.devnet.key("client2"))
    assert world.ok("vault", "balance", "--key-env", "MY_OGPU_KEY")["address"] == world.address("client2")
    key_file = tmp_path / "key"
    key_file.write_text(world.devnet.key("provider2") + "\n")
    key_file.chmod(0o600)
    out = world.ok("vault", "deposit", "--amount", "1ogpu", "--key-file", str(key_file))
    assert out["account"] == world.address("provider2")
    key_file.chmod(0o644)
    loose = world.cli("vault", "balance", "--key-file", str(key_file), "--json")
    assert loose.json()["address"] == world.address("provider2") and "chmod 600" in loose.err
    profile = tmp_path / "copy.json"
    profile.write_text((world.home / "devnet.json").read_text())
    out = world.ok("vault", "balance", "--network", str(profile), "--wallet", "client2")
    assert out["address"] == world.address("client2")
    rpc = world.ok("vault", "balance", "--rpc-url", world.devnet.rpc_url, "--wallet", "provider3")
    assert rpc["address"] == world.address("provider3")


# ---- sources ----


def test_source_publish_show_update_inactivate(world: World, tmp_path: Path) -> None:
    source = world.source("first_response", max_expiry="900")
    snap = snapshot_source(world.chain, source)
    assert snap.client == world.address("client") and snap.status is SourceStatus.ACTIVE
    assert (snap.min_payment, snap.max_expiry_duration) == (10**16, 900)
    assert snap.delivery_method is DeliveryMethod.FIRST_RESPONSE
    assert Path(snap.metadata_url.removeprefix("file://")).parent == (world.home / "payloads").resolve()

    big_jsonl = tmp_path / "big.jsonl"
    big_jsonl.write_text('{"ok": 1}\n\n"' + "x" * 600_000 + '"\n')
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"name": "from a file", "cpu": COMPOSE, "min_payment": "0.02 OGPU"}))
    from_file = world.ok("source", "publish", "--spec", str(spec), "--delivery-method", "manual")
    assert from_file["min_payment"] == money(2 * 10**16) and from_file["delivery_method"] == "MANUAL_CONFIRMATION"

    shown = world.ok("source", "show", source, "--tasks", "--registrants")
    assert shown["address"] == source and shown["tasks"] == [] and shown["registrants"] == []
    assert shown["status"] == "ACTIVE" and shown["environments"] == ["cpu"]

    updated = world.ok("source", "update", source, "--min-payment", "0.05ogpu", "--nvidia", COMPOSE)
    snap = snapshot_source(world.chain, source)
    assert snap.min_payment == 5 * 10**16 and updated["min_payment"] == money(5 * 10**16)
    assert updated["environments"] == ["cpu", "nvidia"] and snap.max_expiry_duration == 900, "the rest kept"
    assert updated["tx_hash"].startswith("0x")

    stranger = world.cli("source", "update", source, "--min-payment", "1", "--wallet", "client2")
    assert stranger.code == 1 and "NotOwner" in stranger.err and stranger.out == ""
    out = world.ok("source", "inactivate", source)
    assert out["status"] == "INACTIVE" and snapshot_source(world.chain, source).status is SourceStatus.INACTIVE
    human = world.cli("source", "show", source)
    assert human.code == 0 and "min_payment: 0.05 OGPU (50000000000000000 wei)" in human.out


# ---- tasks ----


def test_task_publish_many_show_cancel(world: World, tmp_path: Path) -> None:
    source = world.source()
    inputs = tmp_path / "inputs.jsonl"
    lines = [json.dumps({"text": f"sentence {i}"}) for i in range(150)]  # two chunks
    inputs.write_text("\n".join(lines[:75] + ["", *lines[75:]]) + "\n")
    out = world.ok("task", "publish", source, "--inputs", str(inputs), "--function", "echo", "--payment", "0.02ogpu")
    assert out["count"] == 150 and [t["index"] for t in out["tasks"]] == list(range(150))
    assert out["total"] == money(150 * 2 * 10**16)
    assert world.chain.source(source).get_task_count() == 150
    assert world.chain.vault.frozen_payment(world.address("client")) == 150 * 2 * 10**16

    first, second = out["tasks"][0]["address"], out["tasks"][1]["address"]
    config = json.loads(Path(out["tasks"][0]["config_url"].removeprefix("file://")).read_text())
    assert config == {"function_name": "echo", "data": {"text": "sentence 0"}}
    shown = world.ok("task", "show", first)
    assert shown["status"] == "NEW" and shown["source"] == source and shown["payment"] == money(2 * 10**16)
    assert shown["attempt_count"] == 0 and shown["winning_provider"] is None and shown["expired"] is False
    assert shown["expiry_time"] == snapshot_task(world.chain, first).expiry_time == out["expiry_time"]
    listed = world.ok("source", "show", source, "--tasks")["tasks"]
    assert len(listed) == 150 and listed[:2] == [first, second]

    canceled = world.ok("task", "cancel", first, second)
    assert [r["status"] for r in canceled["canceled"]] == ["CANCELED", "CANCELED"]
    assert canceled["refunded"] == money(4 * 10**16)
    assert world.chain.vault.frozen_payment(world.address("client")) == 148 * 2 * 10**16
    again = world.cli("task", "cancel", first)
    assert again.code == 1 and "NotCancelable" in again.err

    one = world.ok("task", "publish", source, "--data", '{"function_name": "echo", "data": {"x": 1}}')
    assert one["count"] == 1 and one["payment"] == money(10**16), "default payment: the source's minimum"


@pytest.fixture
def sim(world: World) -> Iterator[list[Any]]:
    """Stand-in providers and their payload servers, stopped after the test."""
    started: list[Any] = []
    yield started
    for thing in reversed(started):
        if isinstance(thing, SimProvider):
            thing.stop()
        else:
            thing.__exit__(None, None, None)


def test_provider_register_then_responses_confirm_and_wait(world: World, sim: list[Any]) -> None:
    source = world.source("manual", min_lockup="5ogpu")
    provider = world.address("provider1")
    reg = world.ok("provider", "register", source)
    assert reg["provider"] == provider and reg["registered"] == [source]
    assert [s["step"] for s in reg["transactions"]] == ["register"], "20 OGPU locked already: no lock needed"
    again = world.ok("provider", "register", source)
    assert again["registered"] == [] and again["already_registered"] == [source] and again["transactions"] == []
    big = world.ok("provider", "register", source, "--wallet", "provider2", "--stake", "25ogpu")
    assert [s["step"] for s in big["transactions"]] == ["deposit", "lock", "register"]
    assert world.chain.vault.lockup_of(world.address("provider2")) == 25 * ETHER

    # The Nexus takes only http(s) response URLs: the provider serves its payloads over loopback.
    store = LocalStore(world.home / "responses").__enter__()
    sim.append(store)
    p = SimProvider(
        world.devnet.network, world.devnet.key("provider1"), [source], store, from_block=world.chain.block_number()
    )
    sim.append(p)
    p.start()
    out = world.ok(
        "task", "publish", source, "--data", '{"text": "hello"}', "--function", "echo", "--wait", "--timeout", "60"
    )
    task = out["tasks"][0]["address"]
    assert out["results"] == [{"task": task, "status": "RESPONDED", "winning_provider": None}], p.errors

    untrusted = world.ok("task", "responses", task, "--fetch")["responses"][0]
    assert "payload" not in untrusted and "not under an allowed origin" in untrusted["payload_error"]
    listed = world.ok("task", "responses", task, "--fetch", "--trust", store.base_url)
    assert listed["count"] == 1
    (r,) = listed["responses"]
    assert r["provider"] == provider and r["status"] == "SUBMITTED" and r["confirmed"] is False
    assert r["payload"]["result"] == {"text": "hello"} and r["payment"] == money(10**16)
    assert [x.address for x in get_task_responses(world.chain, task)] == [r["address"]]

    confirmed = world.ok("task", "confirm", r["address"])
    assert confirmed["task_status"] == "FINALIZED" and confirmed["provider"] == provider
    snap = snapshot_task(world.chain, task)
    assert snap.status is TaskStatus.FINALIZED and snap.winning_provider == provider
    assert get_task_responses(world.chain, task)[0].status is ResponseStatus.CONFIRMED

    status = world.ok("provider", "status", "--source", source)
    assert status["address"] == provider and status["total_earnings"] == money(10**16)
    assert status["registrations"] == [{"source": source, "registered": True, "registrant_id": 1, "environment": "cpu"}]
    other = world.ok("provider", "status", world.address("provider3"), "--source", source)
    assert other["registrations"][0]["registered"] is False


def test_reads_and_writes_use_only_the_real_networks_abi(world: World, sim: list[Any]) -> None:
    """Through the ABI firewall: every view and transaction of these commands exists on the real
    network (the devnet's extensions are refused)."""
    source, idle = world.source("manual"), world.source("manual")  # no provider watches `idle`
    world.ok("provider", "register", source)
    store = LocalStore(world.home / "responses").__enter__()
    sim.append(store)
    start = world.chain.block_number()
    p = SimProvider(world.devnet.network, world.devnet.key("provider1"), [source], store, from_block=start)
    sim.append(p)
    p.start()
    with AbiFirewall(world.devnet.rpc_url, singletons=world.devnet.contracts, strict=True) as fw:
        via = ["--rpc-url", fw.url]
        out = world.ok(
            "task", "publish", source, "--data", "[1, 2]", "--function", "echo", "--wait", "--timeout", "60", *via
        )
        task = out["tasks"][0]["address"]
        world.ok("task", "show", task, *via)
        response = world.ok("task", "responses", task, *via)["responses"][0]["address"]
        world.ok("task", "confirm", response, *via)
        world.ok("source", "show", source, "--tasks", "--registrants", *via)
        world.ok("vault", "balance", *via)
        world.ok("provider", "status", "--source", source, *via)
        spare = world.ok("task", "publish", idle, "--data", "{}", "--function", "echo", *via)["tasks"][0]
        world.ok("task", "cancel", spare["address"], *via)
    assert fw.allowed_count > 20


# ---- bad input ----

KEY = DEV_KEYS[1]
NOWHERE = "0x" + "11" * 20
BAD: list[tuple[str, list[str], str]] = [
    ("amount-garbage", ["vault", "deposit", "--amount", "1.5.3"], "--amount"),
    ("amount-a-key", ["vault", "deposit", "--amount", KEY], "--amount"),
    ("amount-decimal-wei", ["vault", "lock", "--amount", "1.5"], "--amount"),
    ("amount-zero", ["vault", "withdraw", "--amount", "0"], "--amount"),
    ("amount-over-balance", ["vault", "withdraw", "--amount", "5000ogpu"], "--amount"),
    ("unbond-over-lockup", ["vault", "unbond", "--amount", "1ogpu"], "--amount"),
    ("key-pasted-as-flag", ["vault", "balance", "--key", KEY], "--key"),
    ("address-short", ["vault", "balance", "0x12"], "ADDRESS"),
    ("address-a-key", ["vault", "balance", KEY], "ADDRESS"),
    ("wallet-a-key", ["vault", "balance", "--wallet", KEY], "--wallet"),
    ("key-env-unset", ["vault", "balance", "--key-env", "OGPU_CLI_TEST_UNSET"], "--key-env"),
    ("key-file-missing", ["vault", "balance", "--key-file", "/nonexistent/key"], "--key-file"),
    ("network-no-file", ["vault", "balance", "--network", "/nonexistent/net.json"], "--network"),
    ("network-a-key", ["vault", "balance", "--network", KEY], "--network"),
    ("rpc-url-not-http", ["vault", "balance", "--rpc-url", "ftp://x"], "--rpc-url"),
    ("two-signers", ["vault", "balance", "--wallet", "client", "--key-env", "X"], "--key-env"),
    ("task-not-an-address", ["task", "show", "nothex"], "TASK"),
    ("task-nothing-to-publish", ["task", "publish", "{source}"], "--data"),
    ("task-data-not-json", ["task", "publish", "{source}", "--data", "{bad"], "--data"),
    ("task-data-a-key", ["task", "publish", "{source}", "--data", f'"{KEY}"', "--function", "f"], "--data"),
    ("task-no-function", ["task", "publish", "{source}", "--data", '{"x": 1}'], "--data"),
    (
        "task-payment-low",
        ["task", "publish", "{source}", "--data", "1", "--function", "f", "--payment", "1"],
        "--payment",
    ),
    ("task-ttl-long", ["task", "publish", "{source}", "--data", "1", "--function", "f", "--ttl", "99999"], "--ttl"),
    ("task-ttl-zero", ["task", "publish", "{source}", "--data", "1", "--function", "f", "--ttl", "0"], "--ttl"),
    ("task-unknown-source", ["task", "publish", NOWHERE, "--data", "1", "--function", "f"], "SOURCE"),
    ("task-inputs-bad-line", ["task", "publish", "{source}", "--inputs", "{bad_jsonl}", "--function", "f"], "line 2"),
    ("task-inputs-too-big", ["task", "publish", "{source}", "--inputs", "{big_jsonl}", "--function", "f"], "line 3"),
    ("task-inputs-missing", ["task", "publish", "{source}", "--inputs", "/nonexistent.jsonl"], "--inputs"),
    ("source-no-compose", ["source", "publish", "--name", "x", "--min-payment", "1"], "--cpu"),
    ("source-no-min-payment", ["source", "publish", "--name", "x", "--cpu", COMPOSE], "--min-payment"),
    ("source-no-name", ["source", "publish", "--cpu", COMPOSE], "--name"),
    (
        "source-bad-method",
        ["source", "publish", "--name", "x", "--cpu", COMPOSE, "--min-payment", "1", "--delivery-method", "w"],
        "--delivery-method",
    ),
    ("source-bad-url", ["source", "publish", "--name", "x", "--cpu", "not a url", "--min-payment", "1"], "--cpu"),
    (
        "source-spec-bad-amount",
        ["source", "publish", "--spec", "{spec}", "--cpu", COMPOSE],
        "--spec.min_payment",
    ),
    ("source-spec-missing", ["source", "publish", "--spec", "/nonexistent.json"], "--spec"),
    ("source-unknown", ["source", "show", NOWHERE], "SOURCE"),
    ("source-inactivate-unknown", ["source", "inactivate", NOWHERE], "SOURCE"),
    ("provider-wrong-env", ["provider", "register", "{source}", "--environment", "nvidia"], "--environment"),
    ("provider-unknown-source", ["provider", "register", NOWHERE], "SOURCE[0]"),
    ("confirm-not-an-address", ["task", "confirm", "0xzz"], "RESPONSE"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_flags_exit_2_naming_the_option(world: World, case: tuple[str, list[str], str], tmp_path: Path) -> None:
    name, argv, option = case
    bad_jsonl = tmp_path / "bad.jsonl"
    bad_jsonl.write_text('{"ok": 1}\n{nope\n')
    big_jsonl = tmp_path / "big.jsonl"
    big_jsonl.write_text('{"ok": 1}\n\n"' + "x" * 600_000 + '"\n')
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"name": "x", "min_payment": "1.5"}))
    source = world.source() if any("{source}" in a for a in argv) else ""
    nonce = world.chain.rpc.call("eth_getTransactionCount", [world.address("client"), "latest"])
    fill = {"{source}": source, "{bad_jsonl}": str(bad_jsonl), "{big_jsonl}": str(big_jsonl), "{spec}": str(spec)}
    argv = [fill.get(a, a) for a in argv]
    run = world.cli(*argv)
    assert run.code == 2, f"{name}: exit {run.code}: {run.err}"
    last = [line for line in run.err.splitlines() if line.strip()][-1]
    assert option in last and "error" in last, f"{name}: {run.err!r}"
    assert run.out == ""
    after = world.chain.rpc.call("eth_getTransactionCount", [world.address("client"), "latest"])
    assert after == nonce, f"{name}: a transaction was sent"


def test_no_devnet_running_is_one_clear_line(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv(HOME_ENV, str(empty))
    run = world.cli("vault", "balance", "--json")
    assert run.code == 2 and "--network" in run.err and "devnet up" in run.err and run.out == ""
