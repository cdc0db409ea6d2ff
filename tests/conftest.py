"""Shared fixtures. Everything runs against a real anvil with the real contracts: one devnet per
test session, and each test that changes chain state runs between an evm_snapshot and an
evm_revert (which also keeps anvil fast)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ogpu_prefect.chain import devnet as devnet_mod
from ogpu_prefect.chain.devnet import Devnet


@pytest.fixture(scope="session")
def session_devnet() -> Iterator[Devnet]:
    net = devnet_mod.start()
    yield net
    net.stop()


@pytest.fixture
def devnet(session_devnet: Devnet) -> Iterator[Devnet]:
    """The session's devnet, rolled back after the test. Make new TxSenders per test: the
    rollback rewinds nonces."""
    snap = session_devnet.snapshot()
    yield session_devnet
    session_devnet.revert(snap)
