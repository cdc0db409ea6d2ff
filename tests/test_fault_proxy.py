"""Transient RPC failures are retried without ever sending a logical transaction twice: through a
proxy that drops requests, drops replies after the node executed them, and delays, a pipelined
batch publishes each task exactly once and strands no escrow."""

from __future__ import annotations

from ogpu_prefect.chain.events import created_address
from ogpu_prefect.chain.types import DeliveryMethod, TaskParams

from .faultproxy import FaultProxy, Faults
from .helpers import CONFIG, publish_source


def test_batches_through_a_faulty_rpc_publish_each_task_once(devnet) -> None:
    direct = devnet.network.connect()
    client_direct = direct.sender(devnet.key("client"))
    source = publish_source(direct, client_direct, DeliveryMethod.FIRST_RESPONSE)
    balance0 = direct.vault.balance_of(client_direct.address)
    nonce0 = int(direct.rpc.call("eth_getTransactionCount", [client_direct.address, "latest"]), 16)

    faults = Faults(drop_request=0.15, drop_reply=0.15, delay=0.2)
    with FaultProxy(devnet.rpc_url, faults) as proxy:
        flaky = devnet.network.with_rpc(proxy.url).connect(retries=30, backoff=0.005, timeout=5)
        client = flaky.sender(devnet.key("client"))
        expiry = direct.timestamp() + 900
        tasks = []
        n, batch = 90, 30
        for start in range(0, n, batch):
            calls = [flaky.controller.publish_task(TaskParams(source, f"{CONFIG}?i={i}", expiry, 10**16))
                     for i in range(start, start + batch)]
            receipts = client.transact_many(calls)
            tasks += [created_address(r, "TaskPublished", "task", flaky.network.nexus) for r in receipts]

    assert faults.counts["dropped_request"] > 5 and faults.counts["dropped_reply"] > 5, faults.counts
    assert len(set(tasks)) == n
    s = direct.source(source)
    assert s.get_task_count() == n, "a task was published twice (or lost)"
    assert sorted(s.get_tasks(0, n - 1)) == sorted(tasks)
    published = direct.events(["TaskPublished"], 0)
    assert len([e for e in published if e["source"] == source]) == n
    nonce1 = int(direct.rpc.call("eth_getTransactionCount", [client_direct.address, "latest"]), 16)
    assert nonce1 - nonce0 == n, "exactly one transaction per task"
    assert direct.vault.frozen_payment(client_direct.address) == n * 10**16
    assert direct.vault.balance_of(client_direct.address) == balance0 - n * 10**16, "no escrow stranded or doubled"
