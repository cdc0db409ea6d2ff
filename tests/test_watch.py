"""The event watcher for programs outside Prefect (ogpu_prefect/watch.py), on the devnet: a task's
lifecycle comes as typed events in chain order, live and from a past block, sync and async; an
RPC outage (a proxy that drops every connection) is waited out with nothing missed or doubled."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from ogpu_prefect.chain.connection import Chain
from ogpu_prefect.chain.errors import InvalidInputError
from ogpu_prefect.chain.types import DeliveryMethod, TaskStatus
from ogpu_prefect.watch import (
    AgentSet,
    Attempted,
    ProtocolEvent,
    ResponseSubmitted,
    TaskPublished,
    TaskStatusChanged,
    watch,
)

from .faultproxy import FaultProxy, Faults
from .helpers import answered_task, publish_source, register

EVENTS = ["TaskPublished", "Attempted", "ResponseSubmitted", "TaskStatusChanged"]


def lifecycle(devnet: Any, chain: Chain, source: str | None = None) -> tuple[str, str]:
    """Publishes a FIRST_RESPONSE task and answers it (provider1): (source, task)."""
    client, provider = chain.sender(devnet.key("client")), chain.sender(devnet.key("provider1"))
    if source is None:
        source = publish_source(chain, client, DeliveryMethod.FIRST_RESPONSE)
        register(chain, provider, source)
    return source, answered_task(chain, client, provider, source)


def expected(task: str) -> list[tuple[str, Any]]:
    return [
        ("TaskPublished", task),
        ("TaskStatusChanged", TaskStatus.ATTEMPTED),
        ("Attempted", task),
        ("ResponseSubmitted", task),
        ("TaskStatusChanged", TaskStatus.FINALIZED),
    ]


def shape(events: list[ProtocolEvent]) -> list[tuple[str, Any]]:
    return [(e.name, e.status if isinstance(e, TaskStatusChanged) else e.task) for e in events]  # type: ignore[attr-defined]


def collect(iterator: Any, out: list[ProtocolEvent], until: int) -> None:
    for e in iterator:
        out.append(e)
        if len(out) >= until:
            return


def test_watch_yields_a_tasks_lifecycle_live_in_order_typed(devnet) -> None:
    chain = Chain(devnet.network)
    stop = threading.Event()
    seen: list[ProtocolEvent] = []
    reader = threading.Thread(target=collect, args=(watch(chain, EVENTS, poll_interval=0.05, stop=stop), seen, 5))
    reader.start()
    _, task = lifecycle(devnet, chain)  # the watch starts after the head at its call
    reader.join(timeout=30)
    stop.set()
    assert not reader.is_alive()
    assert shape(seen) == expected(task)
    published, attempted = seen[0], seen[2]
    assert isinstance(published, TaskPublished) and isinstance(attempted, Attempted)
    assert attempted.provider == devnet.address("provider1") and attempted.suggested_payment == 10**16
    assert isinstance(seen[3], ResponseSubmitted) and seen[3].response.startswith("0x")
    receipt = chain.rpc.call("eth_getTransactionReceipt", [published.tx_hash])
    assert int(receipt["blockNumber"], 16) == published.block_number
    assert [e.block_number for e in seen] == sorted(e.block_number for e in seen)


def test_watch_from_a_past_block_and_the_terminals_events(devnet) -> None:
    chain = Chain(devnet.network)
    start = chain.block_number() + 1
    _, task = lifecycle(devnet, chain)
    master = chain.sender(devnet.key("master"))
    master.transact(chain.terminal.set_agent(devnet.address("agent"), True))
    stop = threading.Event()
    seen: list[ProtocolEvent] = []
    collect(watch(chain, [*EVENTS, "AgentSet"], from_block=start, poll_interval=0.05, stop=stop), seen, 6)
    assert shape(seen[:5]) == expected(task)
    agent_set = seen[5]
    assert isinstance(agent_set, AgentSet) and agent_set.emitter == chain.network.terminal
    assert (agent_set.account, agent_set.agent, agent_set.value) == (master.address, devnet.address("agent"), True)


def test_async_for_over_watch_yields_the_same_in_an_event_loop(devnet) -> None:
    chain = Chain(devnet.network)
    start = chain.block_number() + 1
    _, task = lifecycle(devnet, chain)

    async def main() -> list[ProtocolEvent]:
        stop = asyncio.Event()
        seen: list[ProtocolEvent] = []
        ticks = 0

        async def ticker() -> None:  # the loop is not blocked by the polls
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0.01)

        tick = asyncio.create_task(ticker())
        async for e in watch(chain, EVENTS, from_block=start, poll_interval=0.05, stop=stop):
            seen.append(e)
            if len(seen) == 5:
                stop.set()
        await tick
        assert ticks > 0
        return seen

    assert shape(asyncio.run(main())) == expected(task)


def test_watch_survives_an_rpc_outage_and_yields_each_event_once(devnet, caplog: pytest.LogCaptureFixture) -> None:
    direct = Chain(devnet.network)
    source, _ = lifecycle(devnet, direct)
    with FaultProxy(devnet.rpc_url, Faults(drop_request=0, drop_reply=0, delay=0)) as proxy:
        # The RPC layer gives up after 0.5 s, so the outage outlasts it: the watcher's own retry.
        chain = Chain(devnet.network.with_rpc(proxy.url), outage_s=0.5, timeout=2)
        stop = threading.Event()
        seen: list[ProtocolEvent] = []
        reader = threading.Thread(target=collect, args=(watch(chain, EVENTS, poll_interval=0.05, stop=stop), seen, 15))
        reader.start()
        _, first = lifecycle(devnet, direct, source)
        deadline = time.time() + 20
        while len(seen) < 5:
            assert time.time() < deadline, shape(seen)
            time.sleep(0.05)
        proxy.outage(3.0)
        _, second = lifecycle(devnet, direct, source)  # mined while the watcher cannot reach the node
        _, third = lifecycle(devnet, direct, source)
        reader.join(timeout=30)
        stop.set()
        assert not reader.is_alive(), shape(seen)
        assert proxy.faults.counts.get("outage", 0) > 0, "the outage happened"
    assert "event watch: the RPC failed" in caplog.text, "it outlasted the RPC layer's own retries"
    assert shape(seen) == expected(first) + expected(second) + expected(third)
    assert len({(e.tx_hash, e.log_index) for e in seen}) == len(seen)


def test_bad_arguments_are_refused_when_called(devnet) -> None:
    chain = Chain(devnet.network)
    with pytest.raises(InvalidInputError) as bad:
        watch(chain, ["TaskPublished", "Nope"])
    assert bad.value.field == "events[1]"
    with pytest.raises(InvalidInputError) as bad:
        watch(chain, "TaskPublished")
    assert bad.value.field == "events"
    with pytest.raises(InvalidInputError) as bad:
        watch(chain, poll_interval=0)
    assert bad.value.field == "poll_interval"
    with pytest.raises(InvalidInputError) as bad:
        watch(chain, from_block=-1)
    assert bad.value.field == "from_block"
