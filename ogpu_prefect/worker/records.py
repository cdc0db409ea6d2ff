"""Which journal a worker keeps, by its `records` job variable (docs/worker.md): `flow_runs`, a
flow run per task (journal.py: Retry and Cancel per task in the UI, the writes' times); `tasks`
(the default), each task a task run of its source service session's flow run, stamped with the
chain's attempt and response times (task_records.py); `summary`, the sessions and their tables
only."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from .. import api_writer, events
from .journal import FlowRunJournal
from .task_records import TaskRunJournal
from .task_run_events import chain_block_times, chain_response_times


def open_journal(
    records: str,
    client: Any,
    deployment_id: UUID,
    flow_id: UUID,
    pool: str,
    queue: str,
    provider: Any,
    flow_run_logger: Any,
    log: Any,
) -> FlowRunJournal | TaskRunJournal:
    """The journal of `provider`'s tasks on the worker's deployment, as `records` asks."""
    tags = ["ogpu-provider", f"provider:{provider.address}"]
    runs = FlowRunJournal(client, deployment_id, flow_id, pool, queue, tags, flow_run_logger, log)
    if records == "flow_runs":
        return runs
    return TaskRunJournal(
        runs,
        events.sender().put,
        chain_block_times(provider.chain.rpc),
        summary_only=records == "summary",
        tags=tags,
        send_log=api_writer.writer("/logs/").put,
        response_times=chain_response_times(provider.chain),
    )
