"""Prefect tasks for OpenGPU clients: thin over `ogpu_prefect.client` (chain + storage).

Every task takes the network, wallet and (where payloads are written or read) storage as blocks
or as the names of saved blocks, so flow parameters never carry a key; a key-shaped value where a
name or an address belongs is refused without being echoed (validation.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from .blocks import OGPUNetwork, OGPUStorage, OGPUWallet, load_block
from .chain.errors import ExpiryOutOfRangeError, InvalidInputError
from .client import OGPUClient, SourceTerms
from .delivery import DecisionKind
from .engine.window import batch_marks
from .events import emit_task_event
from .models import PublishedTask, SourceSpec, TaskInput, TaskResult, coerce_inputs
from .provider_failures import from_prefect_events
from .reputation import open_book
from .validation import (
    check_address,
    check_int,
    check_list,
    check_name,
    check_number,
    parse_delivery,
    parse_model,
    parse_models,
)
from .waiting import Tracked, Waiter

BlockOrName = Any
"""A block instance, or the name of a saved block."""


def make_client(network: BlockOrName, wallet: BlockOrName, storage: BlockOrName | None = None) -> OGPUClient:
    """An OGPUClient from blocks (or block names). With `storage`, payloads are written there and
    responses are read only from its trusted origins."""
    net = load_block(OGPUNetwork, network, "network")
    signer = load_block(OGPUWallet, wallet, "wallet").signer()
    if storage is None:
        return OGPUClient(net.connect(), signer)
    block = load_block(OGPUStorage, storage, "storage")
    return OGPUClient(net.connect(), signer, block.store(), trusted_origins=block.trusted_origins())


@task(name="publish_source", cache_policy=NO_CACHE)
def publish_source(
    spec: SourceSpec | dict[str, Any], network: BlockOrName, wallet: BlockOrName, storage: BlockOrName
) -> str:
    """Uploads a source's metadata and publishes it; returns the source address.

    Example:
        ```python
        source = publish_source(
            SourceSpec(name="sentiment", cpu="https://host/compose.yml", min_payment=10**16,
                       delivery_method="FIRST_RESPONSE"),
            network="devnet", wallet="client", storage="payloads")
        ```
    """
    client = make_client(network, wallet, storage)
    address = client.publish_source(parse_model(SourceSpec, spec, "spec"))
    get_run_logger().info("published source %s", address)
    return address


@task(name="update_source", cache_policy=NO_CACHE)
def update_source(
    source: str, spec: SourceSpec | dict[str, Any], network: BlockOrName, wallet: BlockOrName, storage: BlockOrName
) -> str:
    """Replaces a source's metadata and terms (tasks already published keep theirs); returns the tx hash.

    Example:
        ```python
        update_source(source, SourceSpec(name="sentiment v2", cpu=url, min_payment=2 * 10**16),
                      network="devnet", wallet="client", storage="payloads")
        ```
    """
    return make_client(network, wallet, storage).update_source(source, parse_model(SourceSpec, spec, "spec")).tx_hash


@task(name="inactivate_source", cache_policy=NO_CACHE)
def inactivate_source(source: str, network: BlockOrName, wallet: BlockOrName) -> str:
    """Stops a source from taking tasks (one-way); returns the tx hash.

    Example:
        ```python
        inactivate_source(source, network="devnet", wallet="client")
        ```
    """
    return make_client(network, wallet).inactivate_source(source).tx_hash


@task(name="publish_tasks", cache_policy=NO_CACHE)
def publish_tasks(
    source: str | SourceTerms,
    inputs: Sequence[TaskInput | dict[str, Any] | Any],
    payment: int,
    network: BlockOrName,
    wallet: BlockOrName,
    storage: BlockOrName,
    *,
    ttl: int = 600,
    function_name: str | None = None,
    batch_key: str | None = None,
    indexes: Sequence[int] | None = None,
    attempt: int = 0,
    reconcile_from_block: int | None = None,
) -> list[PublishedTask]:
    """Publishes one task per input (a batch; one task is a batch of one), pipelined; returns them
    in input order. Bad input raises a typed `InvalidInputError` naming the field before any
    transaction. With `batch_key` and `reconcile_from_block`, a retry reuses tasks it already
    published instead of publishing them twice. `source`: an address, or the `SourceTerms` a
    caller already read (run_batch's rounds: a round trip each fewer on a remote node).

    Example:
        ```python
        tasks = publish_tasks(source, [{"text": "great"}, {"text": "awful"}], payment=10**17,
                              function_name="analyze", network="devnet", wallet="client",
                              storage="payloads", ttl=300)
        ```
    """
    items = coerce_inputs(inputs, function_name)
    check_int("ttl", ttl, minimum=1)
    check_name("batch_key", batch_key, optional=True)  # it goes into every task's public config
    check_int("attempt", attempt, minimum=0)
    idx = check_list("indexes", indexes) if indexes is not None else list(range(len(items)))
    client = make_client(network, wallet, storage)
    expiry = client.chain.now() + ttl
    try:
        published = client.publish_tasks(
            source,
            items,
            payment,
            expiry,
            marks=batch_marks(batch_key, idx, attempt),
            indexes=idx,
            reconcile_from_block=reconcile_from_block,
        )
    except ExpiryOutOfRangeError as e:  # raised before any transaction; the caller gave a ttl
        raise ExpiryOutOfRangeError("ttl", f"{ttl}s: {str(e).partition(': ')[2]}") from None
    address = source.address if isinstance(source, SourceTerms) else source
    get_run_logger().info("published %d task(s) on source %s", len(published), address)
    return published


def task_event(chain_id: int, t: Tracked) -> tuple[str, int, str, str, dict[str, Any]]:
    """(kind, chain id, task, source, payload) of a decided task's event: what an automation
    needs, the winner, its payment, the result's URL and the latency; or why it failed."""
    p, decision = t.published, t.outcome
    payload: dict[str, Any] = {"index": p.index, "status": t.status.name}
    if decision is not None and decision.kind is DecisionKind.ACCEPT and decision.response is not None:
        r = decision.response
        payload.update(
            provider=r.provider,
            payment=str(r.payment),
            response=r.address,
            result_url=r.data_url,
            latency_s=round((t.decided_at or time.time()) - p.published_at, 3),
        )
        return "finalized", chain_id, p.address, p.source, payload
    payload["reason"] = decision.fail_reason.value if decision is not None and decision.fail_reason else "expired"
    return "failed", chain_id, p.address, p.source, payload


def result_of(t: Tracked) -> TaskResult:
    """The TaskResult of one waited-for task."""
    p, decision = t.published, t.outcome
    if decision is not None and decision.kind is DecisionKind.ACCEPT and decision.response is not None:
        r = decision.response
        return TaskResult(
            index=p.index,
            status="finalized",
            task=p.address,
            tasks=[p.address],
            provider=r.provider,
            payment=r.payment,
            response=r.address,
            data_url=r.data_url,
            result=r.payload,
            latency_s=(t.decided_at or time.time()) - p.published_at,
            chain_status=t.status,
            error=r.fetch_error,
        )
    status = "expired" if t.note == "expired" or decision is None else "failed"
    reason = decision.fail_reason.value if decision is not None and decision.fail_reason else None
    return TaskResult(
        index=p.index,
        status=status,
        task=p.address,
        tasks=[p.address],
        chain_status=t.status,
        error=t.note or "no decision before the deadline",
        reason=reason,
    )


@task(name="wait_for_results", cache_policy=NO_CACHE)
def wait_for_results(
    published: Sequence[PublishedTask],
    network: BlockOrName,
    wallet: BlockOrName,
    storage: BlockOrName,
    *,
    delivery: str = "first_response",
    delivery_options: dict[str, Any] | None = None,
    from_block: int | None = None,
    deadline_s: float | None = None,
    poll_interval: float = 0.1,
    progress: Callable[[int, int], None] | None = None,
    reputation: str | None = "default",
    reputation_options: dict[str, Any] | None = None,
) -> list[TaskResult]:
    """Follows published tasks until each is decided by the delivery method (confirming responses
    where it says so), expires, or `deadline_s` passes; returns results in the given order.
    Response payloads are read only from `storage`'s trusted origins. Providers' refusals and
    accepted results are recorded under the `reputation` policy (None or "off": none), banned
    providers' responses are ignored, and a task whose every response was refused fails as
    "rejected" (docs/reputation.md).

    Example:
        ```python
        results = wait_for_results(tasks, network="devnet", wallet="client", storage="payloads",
                                   delivery="manual", delivery_options={"policy": "lowest_price"})
        ```
    """
    check_number("poll_interval", poll_interval, exclusive_minimum=0, maximum=60)
    published = parse_models(PublishedTask, published, "published", hashes=True)
    check_number("deadline_s", deadline_s, minimum=0, optional=True)
    check_int("from_block", from_block, minimum=0, optional=True)
    if progress is not None and not callable(progress):
        raise InvalidInputError("progress", f"expected a callable(done, total), not {type(progress).__name__}")
    strategy = parse_delivery(delivery, delivery_options)
    client = make_client(network, wallet, storage)
    book = open_book(client.chain.network.chain_id, reputation, reputation_options, client.sender.signer)
    if not published:
        return []
    latest_expiry = max(p.expiry_time for p in published)
    deadline = time.time() + (deadline_s if deadline_s is not None else max(latest_expiry - client.chain.now(), 0) + 30)
    start = from_block if from_block is not None else client.chain.block_number() - 256
    done = 0
    last_progress = 0.0

    chain_id = client.chain.network.chain_id

    def on_change(kind: str, t: Tracked) -> None:
        nonlocal done, last_progress
        if kind not in ("decided", "failed", "expired"):
            return  # attempts and responses are on chain and in the batch's progress: no event each
        done += 1
        emit_task_event(*task_event(chain_id, t))
        if progress is not None and time.time() - last_progress > 0.5:
            last_progress = time.time()
            progress(done, len(published))

    waiter = Waiter(
        client,
        published,
        strategy,
        from_block=max(start, 0),
        poll_interval=poll_interval,
        on_change=on_change,
        reputation=book,
        failures=from_prefect_events(chain_id, min(p.published_at for p in published) - 5),
    )
    tracked = waiter.run(deadline)
    if progress is not None:
        progress(done, len(published))
    return [result_of(tracked[p.address]) for p in published]


@task(name="confirm_response", cache_policy=NO_CACHE)
def confirm_response(response: str, network: BlockOrName, wallet: BlockOrName) -> str:
    """Confirms a response of a MANUAL_CONFIRMATION task (pays it, refunds the rest); returns the tx hash."""
    response = check_address("response", response)
    return make_client(network, wallet).confirm_responses([response])[0].tx_hash


@task(name="cancel_task", cache_policy=NO_CACHE)
def cancel_task(task_address: str, network: BlockOrName, wallet: BlockOrName) -> str:
    """Cancels a task nobody attempted yet; its escrow returns. Returns the tx hash."""
    task_address = check_address("task_address", task_address)
    return make_client(network, wallet).cancel_tasks([task_address])[0].tx_hash


@task(name="reclaim_expired", cache_policy=NO_CACHE)
def reclaim_expired(tasks: Sequence[str], network: BlockOrName, wallet: BlockOrName) -> list[str]:
    """Takes back the escrow of expired, unfinalized tasks (pipelined; the devnet's extension, see
    docs/contracts.md); returns the tx hashes."""
    return [r.tx_hash for r in make_client(network, wallet).reclaim_expired(tasks)]
