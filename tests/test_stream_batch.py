"""stream_batch / stream_tasks end to end on the devnet, with stand-in providers (tests/provider_sim.py:
real transactions): inputs from a JSON-lines file or a generator, at most `max_in_flight` tasks and
`budget` of escrow at once (escrow sampled from the Vault while it runs), every input's result
written exactly once, a re-run of a finished batch publishes nothing, failed inputs re-published,
bad input refused before any transaction."""

from __future__ import annotations

import gzip
import json
import threading
from pathlib import Path

import pytest
from prefect import flow

from ogpu_prefect.chain.connection import Chain
from ogpu_prefect.chain.errors import BudgetExceededError, InvalidInputError
from ogpu_prefect.chain.types import DeliveryMethod, TaskStatus
from ogpu_prefect.reconcile import find_published
from ogpu_prefect.stream_io import read_results

from .test_run_batch import make_source, start_providers

pytestmark = pytest.mark.usefixtures("prefect_harness")
PAY = 10**16


class EscrowSampler(threading.Thread):
    """The client's escrow (Vault.frozenPayment), read every 50 ms while a batch runs."""

    def __init__(self, chain: Chain, client: str) -> None:
        super().__init__(daemon=True)
        self.chain, self.client = chain, client
        self.samples: list[int] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.05):
            self.samples.append(self.chain.vault.frozen_payment(self.client))

    def __enter__(self) -> EscrowSampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.join()


def write_jsonl(path: Path, rows: list[object]) -> str:
    with gzip.open(path, "wt") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n\n")  # blank lines are skipped
    return f"file://{path}"


def stream(env, source, inputs, **kwargs):
    from ogpu_prefect.flows.stream_batch import stream_batch

    _, network, wallet, storage, _ = env
    return stream_batch(
        source,
        inputs,
        kwargs.pop("payment", PAY),
        network,
        wallet,
        storage,
        function_name="echo",
        return_state=True,
        **kwargs,
    )


def published(chain: Chain, client: str, source: str, start: int) -> list[str]:
    return [t.address for ts in find_published(chain, client, source, start).values() for t in ts]


def test_a_jsonl_file_streams_within_the_budget_and_each_input_ends_once(env, tmp_path: Path, events_sink) -> None:
    devnet = env[0]
    chain = Chain(devnet.network)
    client = devnet.address("client")
    source = make_source(env, DeliveryMethod.FIRST_RESPONSE)
    rows = [{"n": i} for i in range(150)]
    url = write_jsonl(tmp_path / "in.jsonl.gz", rows)
    start = chain.block_number() + 1
    balance0 = chain.vault.balance_of(client)
    sims = start_providers(env, source, ("provider1", "provider2"))
    try:
        with EscrowSampler(chain, client) as escrow:
            state = stream(env, source, url, max_in_flight=40, budget=12 * PAY, batch_key=f"jsonl-{start}")
            summary = state.result()
    finally:
        for s in sims:
            s.stop()
    assert summary.counts == {"finalized": 150}, (summary, [s.errors[:2] for s in sims])
    assert max(escrow.samples) <= 12 * PAY, "never more than the budget in escrow"
    assert max(escrow.samples) > 0 and summary.held_peak_wei <= 12 * PAY
    results = list(read_results(summary.results_url))
    assert sorted(r["index"] for r in results) == list(range(150)), "every input exactly once"
    assert all(r["result"]["result"] == rows[r["index"]] for r in results)
    assert len(published(chain, client, source, start)) == 150, "nothing published twice"
    assert chain.vault.frozen_payment(client) == 0
    assert chain.vault.balance_of(client) == balance0 - summary.paid_wei
    names = events_sink.names()
    assert names.count("ogpu.task.finalized") == 150 and names.count("ogpu.batch.completed") == 1

    # The same batch_key again: complete, nothing published, the same results.
    again = stream(env, source, url, max_in_flight=40, batch_key=f"jsonl-{start}").result()
    assert again.counts == summary.counts and again.parts == summary.parts
    assert len(published(chain, client, source, start)) == 150


def test_inputs_that_give_no_result_are_republished_and_their_escrow_returns(env) -> None:
    devnet = env[0]
    chain = Chain(devnet.network)
    client = devnet.address("client")
    source = make_source(env, DeliveryMethod.FIRST_RESPONSE)
    seen: dict[str, int] = {}

    # The provider leaves every third task of the first 30 published alone: they expire.
    def take(task: str) -> bool:
        k = seen.setdefault(task, len(seen))
        return k >= 30 or k % 3 != 0

    sims = start_providers(env, source, ("provider1",), provider1={"take": take})
    start = chain.block_number() + 1
    try:
        summary = stream(env, source, [{"i": i} for i in range(30)], max_in_flight=10, task_timeout=12).result()
    finally:
        sims[0].stop()
    results = sorted(read_results(summary.results_url), key=lambda r: r["index"])
    assert summary.counts == {"finalized": 30}, results
    again = [r for r in results if r["republished"] == 1]
    assert again and all(len(r["tasks"]) == 2 for r in again)
    assert len(published(chain, client, source, start)) == 30 + len(again)
    assert chain.vault.frozen_payment(client) == 0, "expired escrow reclaimed"


def test_a_generator_streams_through_stream_tasks_inside_a_flow(env) -> None:
    from ogpu_prefect.flows.stream_batch import stream_tasks

    devnet, network, wallet, storage, _ = env
    source = make_source(env, DeliveryMethod.FIRST_RESPONSE)
    pulled: list[int] = []

    def inputs():
        for i in range(25):
            pulled.append(i)
            yield {"function_name": "echo", "data": {"i": i}}

    @flow
    def my_pipeline() -> object:
        return stream_tasks(source, inputs(), PAY, network, wallet, storage, max_in_flight=5)

    sims = start_providers(env, source)
    try:
        summary = my_pipeline()
    finally:
        sims[0].stop()
    assert summary.counts == {"finalized": 25} and pulled == list(range(25))
    assert sorted(r["index"] for r in read_results(summary.results_url)) == list(range(25))


def test_a_user_flow_whose_inputs_fail_mid_stream_gets_its_escrow_back(env) -> None:
    """stream_tasks in a user's own flow (no settle hooks of ours): the generator fails while
    tasks nobody attempted are on chain; they are cancelled and their escrow is back before the
    error reaches the flow (it once left them held until their expiry)."""
    from ogpu_prefect.flows.stream_batch import stream_tasks

    devnet, network, wallet, storage, _ = env
    chain = Chain(devnet.network)
    client = devnet.address("client")
    source = make_source(env, DeliveryMethod.FIRST_RESPONSE)
    start = chain.block_number() + 1
    frozen0 = chain.vault.frozen_payment(client)

    def inputs():
        yield from ({"function_name": "echo", "data": {"i": i}} for i in range(8))
        raise RuntimeError("the input database went away")

    @flow
    def my_pipeline() -> object:
        return stream_tasks(source, inputs(), PAY, network, wallet, storage, max_in_flight=8, task_timeout=600)

    taken: list[str] = []  # the provider serves the first task only: the refill after it fails
    sims = start_providers(env, source, provider1={"take": lambda task: not taken and not taken.append(task)})
    try:
        state = my_pipeline(return_state=True)
    finally:
        sims[0].stop()
    assert state.is_failed() and "input database" in str(state.message)
    tasks = [t for ts in find_published(chain, client, source, start).values() for t in ts]
    statuses = [TaskStatus(s) for s in chain.read_many([chain.task(t.address).read.get_status() for t in tasks])]
    assert len(tasks) == 8 and statuses.count(TaskStatus.FINALIZED) == 1
    assert statuses.count(TaskStatus.CANCELED) == 7, statuses
    assert chain.vault.frozen_payment(client) == frozen0, "no escrow left held"


def test_bad_input_is_refused_before_any_transaction(env, tmp_path: Path) -> None:
    devnet = env[0]
    chain = Chain(devnet.network)
    client = devnet.address("client")
    source = make_source(env, DeliveryMethod.FIRST_RESPONSE)
    nonce0 = chain.rpc.call("eth_getTransactionCount", [client, "latest"])
    bad_line = tmp_path / "bad.jsonl"
    bad_line.write_text('{"i": 1}\n{"i": 2\n')
    cases = [
        ({"inputs": f"file://{bad_line}"}, InvalidInputError, "inputs"),
        ({"inputs": str(tmp_path / "missing.jsonl")}, InvalidInputError, "inputs"),
        ({"inputs": []}, InvalidInputError, "inputs"),
        ({"inputs": [{"i": 1}], "budget": PAY - 1}, BudgetExceededError, "budget"),
        ({"inputs": [{"i": 1}], "max_in_flight": 0}, InvalidInputError, "max_in_flight"),
        ({"inputs": [{"i": 1}], "results_url": "nope://x"}, InvalidInputError, "results_url"),
        ({"inputs": (i for i in range(3))}, InvalidInputError, "inputs"),
    ]
    for kwargs, error, field in cases:
        inputs = kwargs.pop("inputs")
        state = stream(env, source, inputs, **kwargs)
        assert state.is_failed()
        with pytest.raises(error) as info:
            state.result()
        assert info.value.field == field, (kwargs, info.value)
    assert chain.rpc.call("eth_getTransactionCount", [client, "latest"]) == nonce0, "no transaction sent"
