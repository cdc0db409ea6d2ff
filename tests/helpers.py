"""Small builders shared by the chain tests (not fixtures: plain functions over a Chain)."""

from __future__ import annotations

from ogpu_prefect.chain.connection import Chain
from ogpu_prefect.chain.logs import created_address
from ogpu_prefect.chain.structs import ResponseParams, SourceParams, TaskParams
from ogpu_prefect.chain.tx import TxSender
from ogpu_prefect.chain.types import DeliveryMethod, Environment

ETHER = 10**18
META = "http://127.0.0.1:9/meta.json"  # never fetched by the contracts; any http URL will do
CONFIG = "http://127.0.0.1:9/task.json"


def source_params(client: str, method: DeliveryMethod, now: int, **overrides: object) -> SourceParams:
    fields: dict[str, object] = dict(
        client=client,
        imageMetadataUrl=META,
        imageEnvironments=int(Environment.CPU | Environment.NVIDIA),
        minPayment=10**16,
        minAvailableLockup=ETHER,
        maxExpiryDuration=3600,
        deliveryMethod=method,
        lastUpdateTime=now,
    )
    fields.update(overrides)
    return SourceParams(**fields)  # type: ignore[arg-type]


def publish_source(chain: Chain, client: TxSender, method: DeliveryMethod) -> str:
    r = client.transact(chain.nexus.publish_source(source_params(client.address, method, chain.timestamp())))
    return created_address(r, "SourcePublished", "source", chain.network.nexus)


def register(chain: Chain, provider: TxSender, source: str) -> None:
    provider.transact(chain.nexus.register(source, provider.address, int(Environment.CPU)))


def publish_task(chain: Chain, client: TxSender, source: str, payment: int = 10**17, ttl: int = 600) -> str:
    r = client.transact(chain.controller.publish_task(TaskParams(source, CONFIG, chain.timestamp() + ttl, payment)))
    return created_address(r, "TaskPublished", "task", chain.network.nexus)


def respond(chain: Chain, provider: TxSender, task: str, payment: int, data: str) -> str:
    r = provider.transact(chain.nexus.submit_response(ResponseParams(task, provider.address, data, payment)))
    return created_address(r, "ResponseSubmitted", "response", chain.network.nexus)


def answered_task(chain: Chain, client: TxSender, provider: TxSender, source: str, payment: int = 10**16) -> str:
    """A task on `source` (FIRST_RESPONSE: finalized) that `provider`, registered, attempted and answered."""
    task = publish_task(chain, client, source)
    provider.transact(chain.nexus.attempt(task, provider.address, payment))
    respond(chain, provider, task, payment, f"https://r/{task}")
    return task
