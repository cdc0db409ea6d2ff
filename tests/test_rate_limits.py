"""A metered endpoint (tests/rpcproxy.py: a real HTTP proxy in front of the session's anvil, with
round-trip delay, a calls/s limit counting every call in a batch, HTTP 429 + Retry-After or
JSON-RPC -32005) and the chain layer's answer to it: a configured `rate_limit` paces every call of
the process under it, a refusal slows every caller down and is never taken for an outage, and a
real outage still gives up after `outage_s`. Nothing is mocked."""

from __future__ import annotations

import logging
import threading
import time
from email.utils import formatdate
from typing import Any

import pytest
import requests

from ogpu_prefect.chain.connection import Chain
from ogpu_prefect.chain.errors import InvalidInputError, TxRpcError
from ogpu_prefect.chain.pacing import is_rate_limit, retry_after_seconds
from ogpu_prefect.chain.rpc import Rpc

from .rpcproxy import LIMIT_EXCEEDED, RpcProxy


def _in_threads(n: int, work: Any) -> None:
    errors: list[BaseException] = []

    def guarded() -> None:
        try:
            work()
        except BaseException as e:  # noqa: BLE001 - re-raised below
            errors.append(e)

    threads = [threading.Thread(target=guarded) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


# -- the proxy itself ---------------------------------------------------------------------------


def test_proxy_delays_and_counts_calls_by_method_and_role(devnet) -> None:
    with RpcProxy(devnet.rpc_url, delay_s=0.1) as proxy:
        client, worker = Rpc(proxy.url_for("client")), Rpc(proxy.url_for("worker1"))
        t0 = time.monotonic()
        number = client.call("eth_blockNumber")
        assert time.monotonic() - t0 >= 0.1, "no round-trip delay"
        assert int(number, 16) == int(Rpc(devnet.rpc_url).call("eth_blockNumber"), 16), "not forwarded to anvil"
        client.batch([("eth_chainId", []), ("eth_chainId", []), ("eth_blockNumber", [])])
        worker.call("eth_chainId")
        m = proxy.metering
        assert m.calls["client"] == {"eth_blockNumber": 2, "eth_chainId": 2}
        assert m.calls["worker1"] == {"eth_chainId": 1}
        assert m.http == {"client": 2, "worker1": 1}
        assert m.total_calls() == 5 and m.total_rejected() == 0
        assert m.by_method() == {"eth_chainId": 3, "eth_blockNumber": 2}


def test_proxy_answers_429_with_retry_after_counting_every_call_in_a_batch(devnet) -> None:
    with RpcProxy(devnet.rpc_url, limit=5) as proxy:
        url = proxy.url_for("client")
        body = [{"jsonrpc": "2.0", "id": i, "method": "eth_chainId", "params": []} for i in range(4)]
        assert requests.post(url, json=body, timeout=5).status_code == 200
        refused = requests.post(url, json=body, timeout=5)  # 8 calls within the second: over 5
        assert refused.status_code == 429
        assert float(refused.headers["Retry-After"]) >= 1
        assert proxy.metering.rejected_calls["client"] == {"eth_chainId": 4}
        assert proxy.metering.rejected_http["client"] == 1
        time.sleep(1.0)  # the bucket refills
        assert requests.post(url, json=body, timeout=5).status_code == 200


def test_proxy_in_32005_mode_refuses_only_the_calls_over_the_limit(devnet) -> None:
    with RpcProxy(devnet.rpc_url, limit=5, mode="32005") as proxy:
        body = [{"jsonrpc": "2.0", "id": i, "method": "eth_chainId", "params": []} for i in range(8)]
        replies = requests.post(proxy.url_for("c"), json=body, timeout=5).json()
        assert sorted(r["id"] for r in replies) == list(range(8))
        assert sum("result" in r for r in replies) == 5
        assert [r["error"]["code"] for r in replies if "error" in r] == [LIMIT_EXCEEDED] * 3
        assert proxy.metering.total_rejected("c") == 3


# -- the chain layer under a limit -------------------------------------------------------------


def _reads(chain: Chain, address: str, singles: int, batches: int, size: int) -> Any:
    def work() -> None:
        for i in range(singles):
            assert chain.balance(address) > 0
            if i < batches:
                assert len(chain.read_many([chain.vault.read.balance_of(address)] * size)) == size

    return work


def test_at_a_configured_limit_a_batch_of_work_is_never_rejected(devnet) -> None:
    """4 threads and two Chains on one endpoint at 60 calls/s: one pacer for the process, so
    nothing is rejected, and the work takes about calls / limit (paced, not hammering)."""
    with RpcProxy(devnet.rpc_url, delay_s=0.02, limit=60) as proxy:
        network = devnet.network.with_rpc(proxy.url_for("client"))
        a, b = Chain(network, rate_limit=60), Chain(network)
        assert a.rpc.pacer is b.rpc.pacer, "one pacer per endpoint per process"
        address = a.sender(devnet.key("client")).address
        t0 = time.monotonic()
        _in_threads(2, _reads(a, address, 30, 3, 40))
        _in_threads(2, _reads(b, address, 30, 3, 40))
        wall = time.monotonic() - t0
        m = proxy.metering
        assert m.total_calls() == 4 * (30 + 3 * 40) + 1  # and the sender's one eth_chainId check
        assert m.total_rejected() == 0, m.rejected_calls
        assert wall >= (m.total_calls() - 30) / 60, "faster than the limit allows"


def test_the_limit_is_a_network_setting(devnet) -> None:
    from ogpu_prefect.blocks import OGPUNetwork

    block = OGPUNetwork.from_network(devnet.network)
    assert block.rate_limit is None
    limited = block.model_copy(update={"rate_limit": 25.0})
    assert limited.to_network().rate_limit == 25.0
    assert OGPUNetwork.from_network(limited.to_network()).rate_limit == 25.0
    with pytest.raises(InvalidInputError) as e:
        devnet.network.__class__(**{**devnet.network.__dict__, "rate_limit": 0})
    assert e.value.field == "rate_limit"
    with pytest.raises(ValueError, match="rate_limit"):
        OGPUNetwork(**{**block.model_dump(), "rate_limit": -1})


def test_with_no_setting_the_pacer_adapts_to_429s(devnet, caplog) -> None:
    """No configured limit: after the first refusals the process finds the node's pace; at most 1%
    of the calls are rejected, and the episode is one INFO line, no warning."""
    caplog.set_level(logging.INFO, logger="ogpu_prefect")
    with RpcProxy(devnet.rpc_url, delay_s=0.01, limit=100) as proxy:
        chain = Chain(devnet.network.with_rpc(proxy.url_for("adaptive")), outage_s=2)
        address = chain.sender(devnet.key("client")).address
        _in_threads(4, _reads(chain, address, 350, 0, 0))  # single calls: a refused batch is all refused
        m = proxy.metering
        assert m.total_rejected() >= 1, "the limit was never reached: not a test of adapting"
        assert m.total_rejected() <= 0.01 * m.total_calls(), (m.total_rejected(), m.total_calls())
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], "a rate limit is not an outage"
    assert 1 <= len([r for r in caplog.records if "rate-limiting" in r.message]) <= 3


def test_a_429_longer_than_the_outage_budget_never_raises_unreachable(devnet, caplog) -> None:
    caplog.set_level(logging.INFO, logger="ogpu_prefect")
    with RpcProxy(devnet.rpc_url) as proxy:
        chain = Chain(devnet.network.with_rpc(proxy.url_for("patient")), outage_s=1)
        proxy.throttle(3.0)
        t0 = time.monotonic()
        results: list[int] = []
        _in_threads(3, lambda: results.append(chain.block_number()))
        assert time.monotonic() - t0 >= 2.5 and len(results) == 3
        # Retry-After 1 s, every caller paused together: a few requests per second, not a hammering
        assert proxy.metering.rejected_http["patient"] <= 18
    assert len([r for r in caplog.records if "rate-limiting" in r.message]) == 1
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_retry_after_as_an_http_date_pauses_every_caller_until_then(devnet) -> None:
    assert retry_after_seconds("2") == 2.0 and retry_after_seconds(None) is None
    with RpcProxy(devnet.rpc_url, retry_after=formatdate(time.time() + 3, usegmt=True)) as proxy:
        chain = Chain(devnet.network.with_rpc(proxy.url_for("dated")), outage_s=1)
        proxy.throttle(0.5)
        t0 = time.monotonic()
        chain.block_number()
        assert time.monotonic() - t0 >= 1.5, "the Retry-After date was not waited for"
        assert proxy.metering.rejected_http["dated"] == 1


def test_only_a_limits_wording_is_a_rate_limit() -> None:
    assert is_rate_limit(-32005, "limit exceeded") and is_rate_limit(429, "Too Many Requests")
    assert is_rate_limit(-32005, "daily request count exceeded, request rate limited")
    assert not is_rate_limit(-32005, "query returned more than 10000 results"), "a log query's cap: no waiting"
    assert not is_rate_limit(-32000, "rate limit"), "another code"


def test_a_batchs_32005_entries_are_asked_again_not_failed(devnet) -> None:
    with RpcProxy(devnet.rpc_url, limit=10, mode="32005") as proxy:
        chain = Chain(devnet.network.with_rpc(proxy.url_for("batch")), outage_s=1)
        address = chain.sender(devnet.key("client")).address
        want = chain.vault.balance_of(address)
        assert chain.read_many([chain.vault.read.balance_of(address)] * 30) == [want] * 30
        assert proxy.metering.total_rejected() >= 1


def test_a_real_outage_after_a_rate_limit_still_gives_up_after_outage_s(devnet) -> None:
    """The outage budget runs from the first transport failure, not from a 429 before it: 2 s of
    429, then the node is gone: "unreachable" after about outage_s more, not before."""
    with RpcProxy(devnet.rpc_url) as proxy:
        chain = Chain(devnet.network.with_rpc(proxy.url_for("gone")), outage_s=1.5, backoff=0.05)
        proxy.throttle(2.0)
        proxy.outage(60)  # takes over when the throttle ends
        t0 = time.monotonic()
        with pytest.raises(TxRpcError, match="unreachable"):
            chain.block_number()
        took = time.monotonic() - t0
        assert 2.0 + 1.0 <= took < 30, took  # not before outage_s; and not the proxy's 60 s outage
