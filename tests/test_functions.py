"""OGPUFunction end to end: a source's function as a Prefect task (.map, .submit, futures) over a
devnet source served by stand-in providers (tests/provider_sim.py: real transactions), with
Prefect's test harness (a real API server). Publications are counted from the chain's
TaskPublished events and payments from the Vault."""

from __future__ import annotations

import queue
import threading
import time

import pytest

from ogpu_prefect.chain.connection import Chain
from ogpu_prefect.chain.types import DeliveryMethod, TaskStatus
from ogpu_prefect.storage import fetch_json

from .test_run_batch import make_source, start_providers

pytestmark = pytest.mark.usefixtures("prefect_harness")


def published_since(chain: Chain, block: int, source: str) -> list[str]:
    events = chain.cursor(["TaskPublished"], block).poll()
    return [e["task"] for e in events if e["source"].lower() == source.lower()]


def function(env, source: str, **options):
    from ogpu_prefect import OGPUFunction

    _, network, wallet, storage, _ = env
    return OGPUFunction(source, "echo", payment=10**16, network=network, wallet=wallet, storage=storage, **options)


def test_map_50_then_cache_then_no_cache(env) -> None:
    """50 results through futures; a second flow over the same inputs publishes and pays nothing
    (cache hit), and so does run_batch over them; with the cache off it publishes again."""
    from prefect import flow
    from prefect.futures import as_completed, wait

    from ogpu_prefect.flows.run_batch import run_batch

    devnet, network, wallet, storage, _ = env
    chain = Chain(devnet.network)
    source = make_source(env, DeliveryMethod.FIRST_RESPONSE)
    sims = start_providers(env, source, ("provider1", "provider2"))
    client = devnet.address("client")
    inputs = [{"n": i, "text": f"sentence {i}"} for i in range(50)]
    analyze = function(env, source, task_timeout=120)

    @flow
    def user_flow(items: list) -> list:
        futures = analyze.map(items)
        wait(futures)
        assert len(list(as_completed(futures))) == len(items)
        one = analyze.submit(items[0]).result()  # a single call too (answered already: cached)
        assert one["result"] == items[0]  # the result document: task, provider, result
        return [f.result()["result"] for f in futures]

    try:
        block0, balance0 = chain.block_number(), chain.vault.balance_of(client)
        assert user_flow(inputs) == inputs, [s.errors[:3] for s in sims]
        first = published_since(chain, block0, source)
        assert len(first) == 50, "one publication per input, none for the cached single call"
        paid = balance0 - chain.vault.balance_of(client)
        assert paid == 50 * 10**16
        assert chain.vault.frozen_payment(client) == 0

        block1, balance1 = chain.block_number(), chain.vault.balance_of(client)
        assert user_flow(inputs) == inputs
        results = run_batch(source, inputs, 10**16, network, wallet, storage, function_name="echo")
        assert all(r.cached and r.status == "finalized" for r in results)
        assert [r.result["result"] for r in results] == inputs
        assert published_since(chain, block1, source) == [], "a cache hit publishes nothing"
        assert chain.vault.balance_of(client) == balance1, "a cache hit pays nothing"

        block2 = chain.block_number()
        uncached = function(env, source, task_timeout=120, cache=False)

        @flow
        def again(items: list) -> list:
            return [f.result()["result"] for f in uncached.map(items)]

        assert again(inputs[:5]) == inputs[:5]
        assert len(published_since(chain, block2, source)) == 5, "the cache off: published again"
    finally:
        for s in sims:
            s.stop()


def test_a_retry_publishes_once_more_for_that_call_only(env) -> None:
    """Input 3's first task is never taken (it expires): the call fails, its escrow comes back,
    and Prefect's retry publishes it once more; the other calls are published once."""
    from prefect import flow

    devnet = env[0]
    chain = Chain(devnet.network)
    source = make_source(env, DeliveryMethod.FIRST_RESPONSE)
    refused: list[str] = []

    def take(task: str) -> bool:
        if refused:
            return True
        reader = Chain(devnet.network)
        config = fetch_json(reader.read_many([reader.task(task).read.task_params()])[0][1])
        if config.get("data", {}).get("n") == 3:
            refused.append(task)
            return False
        return True

    sims = start_providers(env, source, ("provider1",), provider1={"take": take})
    analyze = function(env, source, task_timeout=10, retries=1)
    inputs = [{"n": i} for i in range(6)]

    @flow
    def user_flow(items: list) -> list:
        return [f.result()["result"] for f in analyze.map(items)]

    try:
        block0 = chain.block_number()
        assert user_flow(inputs) == inputs, [s.errors[:3] for s in sims]
    finally:
        for s in sims:
            s.stop()
    tasks = published_since(chain, block0, source)
    assert len(tasks) == 7, "six calls, one retried: seven publications"
    assert len(refused) == 1
    assert chain.read_many([chain.task(refused[0]).read.get_status()]) == [TaskStatus.CANCELED]
    assert chain.vault.frozen_payment(devnet.address("client")) == 0


def test_a_call_interrupted_mid_way_is_not_published_again(env) -> None:
    """A call times out (Prefect's timeout_seconds) while its task is on chain: the retry waits
    for that same task, and pays it once."""
    from prefect import flow

    devnet = env[0]
    chain = Chain(devnet.network)
    source = make_source(env, DeliveryMethod.FIRST_RESPONSE)
    sims = start_providers(env, source, ("provider1",), provider1={"delay": 4.0})
    # Retries enough for a loaded machine (the task answers after 4 s); each one waits again.
    analyze = function(env, source, task_timeout=60, retries=5, timeout_seconds=2)
    client = devnet.address("client")

    @flow
    def user_flow() -> object:
        return analyze.submit({"slow": True}).result()["result"]

    try:
        block0, balance0 = chain.block_number(), chain.vault.balance_of(client)
        assert user_flow() == {"slow": True}
    finally:
        for s in sims:
            s.stop()
    assert len(published_since(chain, block0, source)) == 1, "the retries waited for the same task"
    assert balance0 - chain.vault.balance_of(client) == 10**16, "paid once"


def test_cancelling_the_flow_cancels_its_tasks_on_chain(env) -> None:
    """Nobody serves the source; the flow run is cancelled through the API: its calls' tasks are
    cancelled on chain and the escrow is back in the Vault."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run
    from prefect.states import Cancelling

    devnet = env[0]
    chain = Chain(devnet.network)
    source = make_source(env, DeliveryMethod.FIRST_RESPONSE)
    analyze = function(env, source, task_timeout=600)
    client = devnet.address("client")
    run_ids: queue.Queue[str] = queue.Queue()

    @flow
    def user_flow(items: list) -> list:
        run_ids.put(str(flow_run.get_id()))
        return [f.result()["result"] for f in analyze.map(items)]

    block0, balance0 = chain.block_number(), chain.vault.balance_of(client)
    thread = threading.Thread(target=lambda: user_flow([{"n": i} for i in range(5)], return_state=True))
    thread.start()
    run_id = run_ids.get(timeout=60)
    deadline = time.time() + 60
    while len(published_since(chain, block0, source)) < 5 and time.time() < deadline:
        time.sleep(0.2)
    tasks = published_since(chain, block0, source)
    assert len(tasks) == 5
    assert chain.vault.frozen_payment(client) == 5 * 10**16
    with get_client(sync_client=True) as c:
        c.set_flow_run_state(run_id, Cancelling(), force=True)
    thread.join(timeout=60)
    assert not thread.is_alive()
    statuses = chain.read_many([chain.task(t).read.get_status() for t in tasks])
    assert [TaskStatus(s) for s in statuses] == [TaskStatus.CANCELED] * 5
    assert chain.vault.frozen_payment(client) == 0, "the escrow is back"
    assert chain.vault.balance_of(client) == balance0


def test_the_streaming_flow_fills_and_reads_the_same_cache(env) -> None:
    """stream_batch pays for 6 inputs and fills the cache; run_batch and a flow's .map over them,
    and stream_batch again (another batch), publish nothing; stream_batch with the cache off does."""
    from prefect import flow

    from ogpu_prefect.flows.run_batch import run_batch
    from ogpu_prefect.flows.stream_batch import stream_batch
    from ogpu_prefect.stream_io import read_results

    devnet, network, wallet, storage, _ = env
    chain = Chain(devnet.network)
    source = make_source(env, DeliveryMethod.FIRST_RESPONSE)
    sims = start_providers(env, source, ("provider1",))
    client = devnet.address("client")
    inputs = [{"n": i} for i in range(6)]
    args = (source, inputs, 10**16, network, wallet, storage)
    analyze = function(env, source, task_timeout=60)

    @flow
    def user_flow(items: list) -> list:
        return [f.result()["result"] for f in analyze.map(items)]

    try:
        first = stream_batch(*args, function_name="echo", task_timeout=60)
        assert first.counts == {"finalized": 6}, [s.errors[:3] for s in sims]
        block, balance = chain.block_number(), chain.vault.balance_of(client)
        assert all(r.cached for r in run_batch(*args, function_name="echo"))
        assert user_flow(inputs) == inputs
        again = stream_batch(*args, function_name="echo", task_timeout=60)
        assert again.counts == {"finalized": 6}
        lines = list(read_results(again.results_url))
        assert all(r["cached"] for r in lines) and sorted(r["result"]["result"]["n"] for r in lines) == list(range(6))
        assert published_since(chain, block, source) == [] and chain.vault.balance_of(client) == balance
        stream_batch(*args, function_name="echo", task_timeout=60, cache=False)
        assert len(published_since(chain, block, source)) == 6, "the cache off: published again"
    finally:
        for s in sims:
            s.stop()


def test_a_manual_confirmation_source_with_the_lowest_price_policy(env) -> None:
    """Delivery methods work as in the flows: `manual` with `lowest_price` confirms the cheaper
    of two providers' responses for each call, and pays only it."""
    from prefect import flow

    devnet = env[0]
    chain = Chain(devnet.network)
    source = make_source(env, DeliveryMethod.MANUAL_CONFIRMATION)
    prices = {"provider1": {"price": lambda pay: pay}, "provider2": {"price": lambda pay: pay // 2}}
    sims = start_providers(env, source, ("provider1", "provider2"), **prices)
    analyze = function(
        env, source, task_timeout=120, delivery="manual", delivery_options={"policy": "lowest_price", "window": 2}
    )
    client = devnet.address("client")
    inputs = [{"n": i} for i in range(4)]

    @flow
    def user_flow(items: list) -> list:
        return [f.result() for f in analyze.map(items)]

    try:
        balance0 = chain.vault.balance_of(client)
        documents = user_flow(inputs)
    finally:
        for s in sims:
            s.stop()
    assert [d["result"] for d in documents] == inputs, [s.errors[:3] for s in sims]
    assert {d["provider"] for d in documents} == {devnet.address("provider2")}, "the cheapest response won"
    assert balance0 - chain.vault.balance_of(client) == 4 * 10**16 // 2
    assert chain.vault.frozen_payment(client) == 0


def test_the_loop_process_never_holds_the_key_and_its_death_is_settled(env) -> None:
    """The calls' loop runs in a process of its own (call_loop.py). Neither what it is sent (its
    spec and seal, pickled) nor its environment or command line holds the wallet's key in any
    form. SIGKILLed while its tasks are NEW (nobody serves the source), this process settles
    what the loop reported open: the tasks are cancelled, the escrow is back, the calls fail."""
    import os
    import pickle
    import signal
    from pathlib import Path

    from prefect import flow

    from ogpu_prefect.call_engine import ENGINES, CallFailedError

    devnet = env[0]
    chain = Chain(devnet.network)
    source = make_source(env, DeliveryMethod.FIRST_RESPONSE)
    analyze = function(env, source, task_timeout=600)
    client = devnet.address("client")
    outcome: queue.Queue[object] = queue.Queue()

    @flow
    def user_flow(items: list) -> list:
        return [f.result() for f in analyze.map(items)]

    block0, balance0 = chain.block_number(), chain.vault.balance_of(client)
    before = set(ENGINES.engines.values())  # earlier tests' loops (a reverted devnet: same addresses)
    thread = threading.Thread(
        target=lambda: outcome.put(user_flow([{"k": i} for i in range(4)], return_state=True)), daemon=True
    )
    thread.start()
    deadline = time.time() + 60
    while len(published_since(chain, block0, source)) < 4 and time.time() < deadline:
        time.sleep(0.2)
    tasks = published_since(chain, block0, source)
    assert len(tasks) == 4
    engines = [e for e in ENGINES.engines.values() if e not in before]
    assert len(engines) == 1
    engine = engines[0]
    key = bytes.fromhex(devnet.key("client").removeprefix("0x"))
    forms = [key, key.hex().encode(), key.hex().upper().encode()]
    sent = pickle.dumps((engine.spec, b""))
    proc = Path(f"/proc/{engine.process.pid}")
    seen = sent + (proc / "environ").read_bytes() + (proc / "cmdline").read_bytes()
    assert not any(f in seen for f in forms), "the key crossed to the loop's process"
    while len(engine.open_tasks) < 4 and time.time() < deadline:
        time.sleep(0.1)
    assert set(engine.open_tasks) == set(tasks), "the loop reported every task it published"

    os.kill(engine.process.pid, signal.SIGKILL)
    thread.join(timeout=120)
    assert not thread.is_alive()
    state = outcome.get_nowait()
    assert state.is_failed()
    with pytest.raises(CallFailedError):
        state.result()
    statuses = chain.read_many([chain.task(t).read.get_status() for t in tasks])
    assert [TaskStatus(s) for s in statuses] == [TaskStatus.CANCELED] * 4
    assert chain.vault.frozen_payment(client) == 0, "the escrow is back"
    assert chain.vault.balance_of(client) == balance0


def test_inputs_are_sent_ahead_only_to_task_runs_of_this_process(env, monkeypatch) -> None:
    """`.map` sends its inputs to this process's loop ahead of their task runs; where the task
    runs run in other processes (a process pool, Dask, Ray) they would not find them and would
    publish again, so nothing is sent ahead. (The loop is spied: nothing is published here.)"""
    from prefect import flow
    from prefect.task_runners import ProcessPoolTaskRunner

    from ogpu_prefect.call_engine import ENGINES

    source = make_source(env, DeliveryMethod.FIRST_RESPONSE)
    analyze = function(env, source, task_timeout=60)
    sent: list[int] = []
    monkeypatch.setattr(ENGINES, "precall", lambda key, build, items, run: sent.append(len(items)))

    @flow
    def here() -> None:
        analyze._send_ahead([{"n": 1}, {"n": 2}])

    @flow(task_runner=ProcessPoolTaskRunner(max_workers=1))
    def elsewhere() -> None:
        analyze._send_ahead([{"n": 1}, {"n": 2}])

    here()
    assert sent == [2]
    elsewhere()
    assert sent == [2], "nothing sent ahead for task runs in other processes"
