"""Hosted JSON-RPC endpoints carry their API key in the URL's path or query: logs and errors name
the endpoint by scheme, host and port only (a real request to a closed local port, no node)."""

from __future__ import annotations

import logging
import socket

import pytest

from ogpu_prefect.chain.errors import TxRpcError
from ogpu_prefect.chain.rpc import Rpc, endpoint_label

SECRET = "k3yOfTheHostedPlan"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_endpoint_is_named_without_its_key(caplog: pytest.LogCaptureFixture) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/v2/{SECRET}?apikey={SECRET}"
    rpc = Rpc(url, outage_s=0.5)
    with caplog.at_level(logging.WARNING), pytest.raises(TxRpcError) as caught:
        rpc.call("eth_blockNumber")
    assert SECRET not in str(caught.value) and SECRET not in caplog.text and SECRET not in repr(rpc)
    assert "127.0.0.1" in str(caught.value)


def test_labels() -> None:
    assert endpoint_label("https://rpc.example.com/v2/abc") == "https://rpc.example.com/…"
    assert endpoint_label("https://user:pw@rpc.example.com") == "https://rpc.example.com/…"
    assert endpoint_label("http://127.0.0.1:8545") == "http://127.0.0.1:8545"
