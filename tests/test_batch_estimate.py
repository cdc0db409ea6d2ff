"""The cost before the run and the unserved-source check, on the devnet under Prefect's test
harness: `run_batch(dry_run=True)` reports the escrow, the gas at the node's current fee, the Vault
balance and the source's providers (an artifact) and moves no wei, sends nothing and writes no
payload; a batch on a source nobody is registered to warns before publishing, or is refused
(`require_providers`) before any transaction. The CLI's `task publish --dry-run` prints the same
figures as one JSON object."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ogpu_prefect.batch_estimate import PUBLISH_GAS, BatchEstimate, fee_per_gas
from ogpu_prefect.chain.connection import Chain
from ogpu_prefect.chain.errors import InvalidInputError
from ogpu_prefect.chain.types import DeliveryMethod

from .test_run_batch import ETHER, artifacts_of, make_source, run

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _spent_nothing(chain: Chain, client: str, before: tuple[int, int, int]) -> None:
    nonce = chain.rpc.call("eth_getTransactionCount", [client, "latest"])
    now = (chain.vault.balance_of(client), chain.balance(client), int(nonce, 16))
    assert now == before, "a dry run / refused batch moved wei or sent a transaction"


@pytest.fixture
def run_logs() -> Iterator[Callable[[], list[tuple[str, str]]]]:
    """Call it after the process' first flow run (which configures Prefect's logging, dropping
    handlers added before): (level, message) of every flow and task run log line from then on."""
    lines: list[tuple[str, str]] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append((record.levelname, record.getMessage()))

    keep = Keep()
    loggers = [logging.getLogger(name) for name in ("prefect.flow_runs", "prefect.task_runs")]

    def watch() -> list[tuple[str, str]]:
        for logger in loggers:
            logger.addHandler(keep)
        return lines

    yield watch
    for logger in loggers:
        logger.removeHandler(keep)


def _state(chain: Chain, client: str) -> tuple[int, int, int]:
    nonce = chain.rpc.call("eth_getTransactionCount", [client, "latest"])
    return chain.vault.balance_of(client), chain.balance(client), int(nonce, 16)


def test_dry_run_reports_the_cost_and_spends_nothing(env, tmp_path: Path) -> None:
    devnet, *_, store = env
    chain = Chain(devnet.network)
    client = devnet.address("client")
    source = make_source(env, DeliveryMethod.FIRST_RESPONSE)
    provider = chain.sender(devnet.key("provider1"))
    provider.transact(chain.nexus.register(source, provider.address, 1))
    before = _state(chain, client)
    written = sorted((tmp_path / "payloads").glob("*"))

    state = run(env, source, [{"i": i} for i in range(7)], payment=10**16, budget="1 OGPU", dry_run=True)
    est = state.result()

    assert isinstance(est, BatchEstimate)
    _spent_nothing(chain, client, before)
    assert sorted((tmp_path / "payloads").glob("*")) == written, "a dry run writes no payload"
    assert (est.source, est.client, est.tasks) == (source, client, 7)
    assert est.payment == 10**16 and est.escrow == 7 * 10**16
    assert est.budget == ETHER and est.fits_budget
    assert est.balance == before[0] and est.covers_escrow is (before[0] >= 7 * 10**16)
    assert est.gas_estimated_by == "eth_estimateGas"
    assert 150_000 < est.gas_per_task < 300_000, est.gas_per_task  # publishTask, contracts/README.md's table
    assert est.fee_per_gas == fee_per_gas(chain) > 0
    assert est.gas_cost == 7 * est.gas_per_task * est.fee_per_gas
    assert est.source_environments == ["cpu"]
    assert [(p.address, p.environment, p.eligible) for p in est.providers] == [(provider.address, ["cpu"], True)]
    art = artifacts_of(state.state_details.flow_run_id)["ogpu-batch-dry-run"]
    assert provider.address in art.data and "nothing was published" in art.data.lower()

    # The estimate is what publishing then costs: a real publish of the same shape uses that gas.
    from ogpu_prefect.models import TaskInput
    from ogpu_prefect.tasks import make_client

    _, network, wallet, storage, _ = env
    (task,) = make_client(network, wallet, storage).publish_tasks(
        source, [TaskInput(function_name="echo", data={"i": 0})], 10**16, chain.now() + 60
    )
    used = int(chain.rpc.call("eth_getTransactionReceipt", [task.tx_hash])["gasUsed"], 16)
    assert used <= est.gas_per_task <= used * 1.1, (used, est.gas_per_task)


def test_a_dry_run_over_the_budget_or_balance_reports_instead_of_refusing(env) -> None:
    devnet, *_ = env
    chain = Chain(devnet.network)
    client = devnet.address("client")
    source = make_source(env, DeliveryMethod.FIRST_RESPONSE)
    before = _state(chain, client)
    est = run(env, source, [{"i": 1}, {"i": 2}], payment=2000 * ETHER, budget="1 OGPU", dry_run=True).result()
    _spent_nothing(chain, client, before)
    assert est.fits_budget is False and est.covers_escrow is False and est.providers == []
    assert est.gas_estimated_by == "gas table" and est.gas_per_task >= PUBLISH_GAS


def test_an_unserved_source_warns_before_publishing_or_is_refused(env, run_logs) -> None:
    devnet, *_ = env
    chain = Chain(devnet.network)
    client = devnet.address("client")
    source = make_source(env, DeliveryMethod.FIRST_RESPONSE)
    before = _state(chain, client)
    state = run(env, source, [{"i": 1}], require_providers=True)
    with pytest.raises(InvalidInputError) as info:
        state.result()
    assert info.value.field == "require_providers" and source in str(info.value)
    _spent_nothing(chain, client, before)

    lines = run_logs()
    state = run(env, source, [{"i": 1}], max_republish=0, task_timeout=10)
    warned = [i for i, (level, m) in enumerate(lines) if level == "WARNING" and "no provider is registered" in m]
    published = [i for i, (_, m) in enumerate(lines) if "published 1 task(s)" in m]
    assert warned and published and warned[0] < published[0], lines
    assert state.result()[0].status == "expired"


def test_stream_batch_warns_about_an_unserved_source(env, run_logs) -> None:
    from ogpu_prefect.flows.stream_batch import stream_batch

    _, network, wallet, storage, _ = env
    source = make_source(env, DeliveryMethod.FIRST_RESPONSE)
    run(env, source, [{"i": 0}], dry_run=True)  # configures Prefect's logging first (run_logs)
    lines = run_logs()
    summary = stream_batch(
        source, [{"i": 1}], 10**16, network, wallet, storage, function_name="echo", task_timeout=10, max_republish=0
    )
    warned = [m for level, m in lines if level == "WARNING" and "no provider is registered" in m]
    assert len(warned) == 1 and source in warned[0], lines
    assert summary.counts == {"expired": 1}, summary.counts


def test_cli_dry_run_prints_the_figures_and_moves_nothing(devnet, tmp_path: Path, monkeypatch, capsys) -> None:
    from ogpu_prefect.chain.devnet import write_profile
    from ogpu_prefect.chain.network import profile_path
    from ogpu_prefect.cli import main
    from ogpu_prefect.cli.context import HOME_ENV

    monkeypatch.setenv(HOME_ENV, str(tmp_path))
    monkeypatch.chdir(tmp_path)
    write_profile(devnet, profile_path(tmp_path))
    chain = Chain(devnet.network)
    client = devnet.address("client")
    assert (
        main(
            [
                "source",
                "publish",
                "--name",
                "e",
                "--cpu",
                "http://127.0.0.1:9/c.yml",
                "--min-payment",
                "0.01ogpu",
                "--json",
            ]
        )
        == 0
    )
    source = json.loads(capsys.readouterr().out)["address"]
    inputs = tmp_path / "in.jsonl"
    inputs.write_text("".join(json.dumps({"i": i}) + "\n" for i in range(3)))
    before = _state(chain, client)
    payloads = sorted(tmp_path.rglob("*.json"))

    assert main(["task", "publish", source, "--inputs", str(inputs), "--function", "f", "--dry-run", "--json"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert "no provider is registered" in captured.err, "the unserved source is warned about on stderr"
    _spent_nothing(chain, client, before)
    assert sorted(tmp_path.rglob("*.json")) == payloads
    assert out["tasks"] == 3 and out["escrow"]["wei"] == 3 * out["payment"]["wei"]
    assert out["balance"]["wei"] == before[0] and out["covers_escrow"] is True
    assert out["gas_cost"]["wei"] == 3 * out["gas_per_task"] * out["fee_per_gas"]["wei"]
    assert out["providers"] == [] and out["source_environments"] == ["cpu"]

    code = main(["task", "publish", source, "--data", "{}", "--function", "f", "--require-providers"])
    err = capsys.readouterr().err
    assert code == 2 and "--require-providers" in err
    _spent_nothing(chain, client, before)
