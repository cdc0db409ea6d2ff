"""Prefect tasks for the read side (thin over `ogpu_prefect.inspect`, which stays Prefect-free for
the CLI): snapshots of a task and a source, and a task's responses (an account's Vault:
`ogpu_prefect.vault.vault_balances`). Each takes only the network (a block or a saved block's
name): reads need no key.

Example:
    ```python
    from ogpu_prefect.read_tasks import get_task_responses, task_snapshot
    snap = task_snapshot(task_address, network="devnet")
    for r in get_task_responses(task_address, network="devnet"):
        print(r.provider, r.status.name, r.data_url)
    ```
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from . import inspect
from .blocks import OGPUNetwork
from .chain.connection import Chain
from .inspect import ResponseSnapshot, SourceSnapshot, TaskSnapshot
from .tasks import BlockOrName, load_block
from .validation import check_address


def _chain(network: BlockOrName) -> Chain:
    return load_block(OGPUNetwork, network, "network").connect()


@task(name="get_task_responses", cache_policy=NO_CACHE)
def get_task_responses(task_address: str, network: BlockOrName) -> list[ResponseSnapshot]:
    """Every response submitted for the task, in attempt order, each read whole (the SDK's
    `get_task_responses`)."""
    task_address = check_address("task_address", task_address)
    return inspect.get_task_responses(_chain(network), task_address)


@task(name="task_snapshot", cache_policy=NO_CACHE)
def task_snapshot(task_address: str, network: BlockOrName) -> TaskSnapshot:
    """The task's parameters, status, delivery method, attempt count and winner, in one batch."""
    return inspect.snapshot_task(_chain(network), task_address, field="task_address")


@task(name="source_snapshot", cache_policy=NO_CACHE)
def source_snapshot(source: str, network: BlockOrName) -> SourceSnapshot:
    """The source's terms, status and counts; an address that is not a source of the network raises
    `UnknownSourceInputError` naming `source`."""
    return inspect.snapshot_source(_chain(network), source)
