"""Transient RPC failures are retried without ever sending a logical transaction twice: through a
proxy that drops requests, drops replies after the node executed them, and delays, a pipelined
batch publishes each task exactly once and strands no escrow."""

from __future__ import annotations

import time

import pytest

from ogpu_prefect.chain.connection import Chain
from ogpu_prefect.chain.logs import created_address
from ogpu_prefect.chain.structs import TaskParams
from ogpu_prefect.chain.types import DeliveryMethod
from ogpu_prefect.delivery import DecisionKind

from .faultproxy import FaultProxy, Faults
from .helpers import CONFIG, publish_source


def test_batches_through_a_faulty_rpc_publish_each_task_once(devnet) -> None:
    direct = Chain(devnet.network)
    client_direct = direct.sender(devnet.key("client"))
    source = publish_source(direct, client_direct, DeliveryMethod.FIRST_RESPONSE)
    balance0 = direct.vault.balance_of(client_direct.address)
    nonce0 = int(direct.rpc.call("eth_getTransactionCount", [client_direct.address, "latest"]), 16)

    faults = Faults(drop_request=0.15, drop_reply=0.15, delay=0.2)
    with FaultProxy(devnet.rpc_url, faults) as proxy:
        flaky = Chain(devnet.network.with_rpc(proxy.url), backoff=0.005, timeout=5)
        client = flaky.sender(devnet.key("client"))
        expiry = direct.timestamp() + 900
        tasks = []
        n, batch = 180, 20
        for start in range(0, n, batch):
            calls = [
                flaky.controller.publish_task(TaskParams(source, f"{CONFIG}?i={i}", expiry, 10**16))
                for i in range(start, start + batch)
            ]
            receipts = client.transact_many(calls)
            tasks += [created_address(r, "TaskPublished", "task", flaky.network.nexus) for r in receipts]

    assert faults.counts["dropped_request"] >= 3 and faults.counts["dropped_reply"] >= 3, faults.counts
    assert len(set(tasks)) == n
    s = direct.source(source)
    assert s.get_task_count() == n, "a task was published twice (or lost)"
    assert sorted(s.get_tasks(0, n - 1)) == sorted(tasks)
    published = direct.cursor(["TaskPublished"], 0).poll()
    assert len([e for e in published if e["source"] == source]) == n
    nonce1 = int(direct.rpc.call("eth_getTransactionCount", [client_direct.address, "latest"]), 16)
    assert nonce1 - nonce0 == n, "exactly one transaction per task"
    assert direct.vault.frozen_payment(client_direct.address) == n * 10**16
    assert direct.vault.balance_of(client_direct.address) == balance0 - n * 10**16, "no escrow stranded or doubled"


def test_a_client_batch_through_a_faulty_rpc_finishes_with_nothing_doubled(devnet, tmp_path) -> None:
    """publish_tasks and wait_for (the client side of run_batch) through the fault proxy, served by a
    stand-in provider on a direct connection: every task finalized once, escrow all settled."""
    from ogpu_prefect.client import OGPUClient
    from ogpu_prefect.models import TaskInput
    from ogpu_prefect.plugins.first_response import FirstResponse
    from ogpu_prefect.storage import LocalStore

    from .provider_sim import SimProvider

    direct = Chain(devnet.network)
    with LocalStore(tmp_path) as store:
        source = publish_source(direct, direct.sender(devnet.key("client")), DeliveryMethod.FIRST_RESPONSE)
        provider = direct.sender(devnet.key("provider1"))
        provider.transact(direct.nexus.register(source, provider.address, 1))
        sim = SimProvider(devnet.network, devnet.key("provider1"), [source], store, from_block=direct.block_number())
        sim.start()
        balance0 = direct.vault.balance_of(devnet.address("client"))
        faults = Faults(drop_request=0.15, drop_reply=0.15, delay=0.2, seed=11)
        try:
            with FaultProxy(devnet.rpc_url, faults) as proxy:
                client = OGPUClient(
                    Chain(devnet.network.with_rpc(proxy.url), backoff=0.005), devnet.key("client"), store
                )
                start = direct.block_number() + 1
                marks = [{"ogpu_prefect": {"batch": "faulty", "index": i}} for i in range(40)]
                published = client.publish_tasks(
                    source,
                    [TaskInput(function_name="echo", data={"i": i}) for i in range(40)],
                    10**16,
                    direct.now() + 120,
                    marks=marks,
                )
                tracked = client.wait_for(published, FirstResponse(), deadline=time.time() + 90, from_block=start)
        finally:
            sim.stop()
    assert faults.counts["dropped_reply"] >= 2 and faults.counts["dropped_request"] >= 2, faults.counts
    assert all(t.outcome is not None and t.outcome.kind is DecisionKind.ACCEPT for t in tracked.values())
    assert [t.outcome.response.payload["result"]["i"] for t in (tracked[p.address] for p in published)] == list(
        range(40)
    )
    assert direct.source(source).get_task_count() == 40, "no task published twice"
    assert direct.vault.frozen_payment(devnet.address("client")) == 0, "no escrow stranded"
    assert direct.vault.balance_of(devnet.address("client")) == balance0 - 40 * 10**16


def test_a_crash_after_broadcast_then_retry_publishes_nothing_twice(devnet, tmp_path, monkeypatch) -> None:
    """The process dies after its transactions left but before it saw the receipts; the retry (a
    new process: new sender, no memory) reconciles by TaskPublished and config URL."""
    from ogpu_prefect.client import OGPUClient
    from ogpu_prefect.models import TaskInput
    from ogpu_prefect.publishing import PartialPublishError
    from ogpu_prefect.storage import FsspecStore

    chain = Chain(devnet.network)
    source = publish_source(chain, chain.sender(devnet.key("client")), DeliveryMethod.FIRST_RESPONSE)
    store = FsspecStore(f"file://{tmp_path}")
    inputs = [TaskInput(function_name="echo", data={"i": i}) for i in range(25)]
    marks = [{"ogpu_prefect": {"batch": "crashy", "index": i, "attempt": 0}} for i in range(25)]
    start = chain.block_number() + 1
    expiry = chain.now() + 600
    balance0 = chain.vault.balance_of(devnet.address("client"))

    first = OGPUClient(Chain(devnet.network), devnet.key("client"), store)

    def crash(*args, **kwargs):
        raise ConnectionError("process killed after broadcasting")

    monkeypatch.setattr(first.sender, "wait", crash)
    with pytest.raises(PartialPublishError) as failed:  # a typed error that says what is known
        first.publish_tasks(source, inputs, 10**16, expiry, marks=marks)
    assert isinstance(failed.value.__cause__, ConnectionError) and failed.value.published == []

    retry = OGPUClient(Chain(devnet.network), devnet.key("client"), store)
    published = retry.publish_tasks(source, inputs, 10**16, expiry, marks=marks, reconcile_from_block=start)
    assert len({p.address for p in published}) == 25
    assert chain.source(source).get_task_count() == 25, "the retry published nothing twice"
    assert sorted(chain.source(source).get_tasks(0, 24)) == sorted(p.address for p in published)
    assert chain.vault.frozen_payment(devnet.address("client")) == 25 * 10**16
    assert chain.vault.balance_of(devnet.address("client")) == balance0 - 25 * 10**16
