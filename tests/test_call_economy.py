"""What a sender costs a metered JSON-RPC endpoint, counted on a devnet that mines a block every
second (a real chain's cadence: a receipt is there only after the next block). Every call inside a
batch counts, as hosted plans count them."""

from __future__ import annotations

import collections
import tempfile
from pathlib import Path
from typing import Any

import pytest

from ogpu_prefect.chain import devnet as devnet_mod
from ogpu_prefect.chain.connection import Chain
from ogpu_prefect.chain.rpc import Rpc
from ogpu_prefect.client import OGPUClient
from ogpu_prefect.models import SourceSpec, TaskInput
from ogpu_prefect.storage import LocalStore


def count_calls(rpc: Rpc) -> collections.Counter[str]:
    """Counts each call `rpc` sends to the node by method (batch entries one by one)."""
    calls: collections.Counter[str] = collections.Counter()
    send = rpc._transport

    def counted(body: Any) -> Any:
        for entry in body if isinstance(body, list) else [body]:
            calls[entry["method"]] += 1
        return send(body)

    rpc._transport = counted  # type: ignore[method-assign]
    return calls


@pytest.mark.stack  # starts anvil
def test_publishing_on_one_second_blocks_asks_each_receipt_about_once() -> None:
    n = 60
    net = devnet_mod.start(block_time=1, gas_limit=30_000_000)
    try:
        chain = Chain(net.network)
        calls = count_calls(chain.rpc)
        with tempfile.TemporaryDirectory() as tmp, LocalStore(Path(tmp)) as store:
            client = OGPUClient(chain, net.key("client"), store)
            spec = SourceSpec(name="echo", cpu="http://127.0.0.1:9/c.yml", min_payment=10**15)
            source = client.publish_source(spec)
            calls.clear()
            inputs = [TaskInput(function_name="echo", data={"i": i}) for i in range(n)]
            tasks = client.publish_tasks(source, inputs, payment=10**16, expiry_time=chain.now() + 600)
        assert len(tasks) == n
        # Before: every missing receipt was asked on every poll until its block came (~20 times
        # a transaction on 1 s blocks). Now one count of used nonces a poll, and each receipt
        # once it can be there (a node may serve a receipt a poll after it counts the nonce).
        assert calls["eth_getTransactionReceipt"] <= 2 * n, dict(calls)
        assert sum(calls.values()) <= 4 * n, dict(calls)
    finally:
        net.stop()


def test_a_provider_reads_two_views_a_new_task_and_its_sources_method_once(devnet: Any) -> None:
    """The worker's watcher on the session devnet: a new task costs its params and status; the
    delivery method is read once per source (a task carries its source's method as published) and
    whether we attempted it only on the first poll, the one that resumes after a restart."""
    from ogpu_prefect.chain.types import DeliveryMethod
    from ogpu_prefect.worker.watcher import ChainWatcher

    from .helpers import publish_source, publish_task

    chain = Chain(devnet.network)
    client = chain.sender(devnet.key("client"))
    source = publish_source(chain, client, DeliveryMethod.FIRST_RESPONSE)
    watcher = ChainWatcher(chain, devnet.address("provider1"), [source], chain.block_number() + 1)
    publish_task(chain, client, source)
    polled, _ = watcher.poll(busy=lambda t: False, skip_resume=set())  # the first poll: resumes
    assert polled.new_offers == 1
    calls = count_calls(chain.rpc)
    n = 20
    for _ in range(n):
        publish_task(chain, client, source)
    calls.clear()
    polled, _ = watcher.poll(busy=lambda t: False, skip_resume=set())
    assert polled.new_offers == n
    assert {o.delivery_method for o in watcher.waiting.values()} == {DeliveryMethod.FIRST_RESPONSE}
    assert calls["eth_call"] == 2 * n, dict(calls)  # was 4 a task


@pytest.mark.stack  # starts anvil
def test_waiting_on_one_second_blocks_polls_at_the_chains_pace() -> None:
    """A client waiting 4 s for tasks nobody answers, on 1 s blocks: it polls at most every 250 ms
    (not every `poll_interval` of 100 ms) and asks the chain's time only when a block came or a
    second passed (the time in between is the last answer plus the time elapsed)."""
    import time

    from ogpu_prefect.plugins.first_response import FirstResponse

    net = devnet_mod.start(block_time=1, gas_limit=30_000_000)
    try:
        chain = Chain(net.network)
        with tempfile.TemporaryDirectory() as tmp, LocalStore(Path(tmp)) as store:
            client = OGPUClient(chain, net.key("client"), store)
            source = client.publish_source(SourceSpec(name="echo", cpu="http://127.0.0.1:9/c.yml", min_payment=10**15))
            start = chain.block_number()
            inputs = [TaskInput(function_name="echo", data={"i": i}) for i in range(5)]
            tasks = client.publish_tasks(source, inputs, payment=10**16, expiry_time=chain.now() + 600)
            calls = count_calls(chain.rpc)
            waited = time.monotonic()
            client.wait_for(tasks, FirstResponse(), deadline=time.time() + 4, from_block=start, poll_interval=0.1)
            waited = time.monotonic() - waited
        polls = calls["eth_blockNumber"]
        assert polls <= waited / 0.25 + 2, dict(calls)  # was one every 100 ms
        assert calls["eth_getBlockByNumber"] <= waited + 2 + polls / 4, dict(calls)  # was one a poll
    finally:
        net.stop()
