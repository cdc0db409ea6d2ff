"""The official `ogpu` SDK (0.2.3), unchanged, driving our contracts on the devnet: the proof that a
real OpenGPU client works against them. The SDK's global ChainConfig is pointed at the devnet and
its IPFS upload URL at a loopback stub (nothing else is patched)."""

from __future__ import annotations

import time

import pytest

from ogpu_prefect.chain.connection import Chain
from ogpu_prefect.chain.types import TaskStatus

from .helpers import register
from .ipfs_stub import IpfsStub


@pytest.fixture
def sdk(devnet, monkeypatch):
    import ogpu
    from ogpu.chain.config import ChainConfig, ChainId

    with IpfsStub() as ipfs:
        monkeypatch.setattr("ogpu.ipfs.publish._IPFS_PUBLISH_URL", f"{ipfs.url}/file/create")
        monkeypatch.setitem(
            ChainConfig.CHAIN_CONTRACTS,
            ChainId.OGPU_MAINNET,
            {
                "NEXUS": devnet.contracts["Nexus"],
                "CONTROLLER": devnet.contracts["Controller"],
                "TERMINAL": devnet.contracts["Terminal"],
                "VAULT": devnet.contracts["Vault"],
            },
        )
        ChainConfig.set_chain(ChainId.OGPU_MAINNET)
        ChainConfig.set_rpc(devnet.rpc_url)
        ogpu.clear_all_nonce_caches()
        try:
            yield ogpu
        finally:
            ChainConfig.reset_rpc()
            ogpu.clear_all_nonce_caches()


def sdk_now(chain: Chain) -> int:
    """A time both clocks accept: the SDK checks an expiry against this machine's clock, the
    contracts against the chain's, and the session's devnet falls behind the wall clock (each
    test's evm_revert takes its time back too)."""
    return max(chain.timestamp(), int(time.time()))


def test_sdk_publishes_and_reads_sources_and_tasks(devnet, sdk) -> None:
    from ogpu.client import (
        DeliveryMethod,
        ImageEnvironments,
        SourceInfo,
        TaskInfo,
        TaskInput,
        cancel_task,
        publish_source,
        publish_task,
    )

    client_key = devnet.key("client")
    info = SourceInfo(
        name="echo",
        description="sdk compat",
        logoUrl="",
        imageEnvs=ImageEnvironments(cpu="http://127.0.0.1:9/compose.yml"),
        minPayment=10**16,
        minAvailableLockup=10**18,
        maxExpiryDuration=3600,
        deliveryMethod=DeliveryMethod.FIRST_RESPONSE,
    )
    source = publish_source(info, private_key=client_key)
    assert source.get_client() == devnet.address("client")
    assert int(source.get_status()) == 0
    metadata = source.get_metadata()
    assert metadata["name"] == "echo"

    chain = Chain(devnet.network)
    provider = chain.sender(devnet.key("provider1"))
    register(chain, provider, source.address)
    assert [getattr(r, "address", r) for r in source.get_registrants()] == [provider.address]

    now = sdk_now(chain)
    task = publish_task(
        TaskInfo(
            source=source.address,
            config=TaskInput(function_name="echo", data={"x": 1}),
            expiryTime=now + 600,
            payment=10**17,
        ),
        private_key=client_key,
    )
    assert task.get_source().address == source.address
    assert task.get_payment() == 10**17
    assert [t.address for t in source.get_tasks()] == [task.address]
    assert chain.task(task.address).get_status() is TaskStatus.NEW

    cancel_task(task.address, private_key=client_key)
    assert chain.task(task.address).get_status() is TaskStatus.CANCELED
    assert chain.vault.frozen_payment(devnet.address("client")) == 0


def test_sdk_typed_errors_fire_on_our_revert_strings(devnet, sdk) -> None:
    from ogpu.client import (
        DeliveryMethod,
        ImageEnvironments,
        SourceInfo,
        TaskInfo,
        TaskInput,
        publish_source,
        publish_task,
    )
    from ogpu.types.errors import InsufficientBalanceError, NotTaskOwnerError

    info = SourceInfo(
        name="echo",
        description="",
        logoUrl="",
        imageEnvs=ImageEnvironments(cpu="http://x/c.yml"),
        minPayment=10**16,
        minAvailableLockup=10**18,
        maxExpiryDuration=3600,
        deliveryMethod=DeliveryMethod.FIRST_RESPONSE,
    )
    source = publish_source(info, private_key=devnet.key("client"))
    now = sdk_now(Chain(devnet.network))
    with pytest.raises(InsufficientBalanceError):  # the agent account has no vault balance
        publish_task(
            TaskInfo(
                source=source.address,
                config=TaskInput(function_name="f", data={}),
                expiryTime=now + 600,
                payment=10**17,
            ),
            private_key=devnet.key("agent"),
        )
    from ogpu.client import cancel_task

    task = publish_task(
        TaskInfo(
            source=source.address, config=TaskInput(function_name="f", data={}), expiryTime=now + 600, payment=10**17
        ),
        private_key=devnet.key("client"),
    )
    with pytest.raises(NotTaskOwnerError):
        cancel_task(task.address, private_key=devnet.key("client2"))
