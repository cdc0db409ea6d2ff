"""`stream_batch`: a batch of any size, streamed (`run_batch` holds a whole batch in memory).

Inputs come from a JSON-lines file (any fsspec URL) or a list; at most `max_in_flight` tasks are
on chain at once, never more than `budget` in escrow; more are published as earlier ones end, and
each result is written to storage (JSON lines, `results_url`) as it ends. Memory follows
`max_in_flight`, not the number of inputs (a resumed run also keeps one entry per task the
earlier runs published). A retry, a re-run or a new run with the same
`batch_key` resumes: inputs with a result are skipped, tasks an earlier run published are reused
(ogpu_prefect/streaming.py). From Python, `stream_tasks` does the same inside any flow and also
takes any iterable (a generator cannot be a flow parameter: Prefect reads it to store it).
"""

import threading
import time
from collections.abc import Iterable
from typing import Any

from prefect import get_run_logger
from prefect.runtime import flow_run

from ogpu_prefect.amounts import Amount, format_ogpu
from ogpu_prefect.batch import (
    Ledger,
    check_limits,
    check_parameters,
    check_source_fits,
    find_batch,
    hold_batch,
    live_ledger,
    open_batch,
    raise_if_unfinished,
    variable_name,
)
from ogpu_prefect.batch_estimate import check_served
from ogpu_prefect.batch_report import ProgressReporter, ogpu, report_escrow
from ogpu_prefect.blocks import OGPUStorage
from ogpu_prefect.chain.errors import BudgetExceededError, InvalidInputError
from ogpu_prefect.escrow import EscrowReport
from ogpu_prefect.events import emit_batch_event
from ogpu_prefect.flowkit import (
    BatchKey,
    Budget,
    DeliveryName,
    DeliveryOptions,
    FunctionName,
    Network,
    Seconds,
    Storage,
    Wallet,
    batch_flow,
    or_none,
    redact_stored_parameters,
    served_parameters,
    settled_on_error,
    tag_run,
)
from ogpu_prefect.reputation import open_book, parse_reputation
from ogpu_prefect.result_cache import ResultCache
from ogpu_prefect.stream_io import InputStream, ResultsWriter
from ogpu_prefect.streaming import Limits, Stream, StreamSummary, summarize
from ogpu_prefect.tasks import load_block, make_client
from ogpu_prefect.validation import check_int, parse_delivery

# No `from __future__ import annotations` here: a served flow is pickled by value into its run's
# process, and a name used only in a string annotation would not be there to resolve it.

RUN_TAGS = ("ogpu", "ogpu-stream")
MAX_IN_FLIGHT = 5000
ResultsUrl = or_none(str, "URL", "<storage>/results/<batch>")
StreamInputs = list[Any] | str


def stream_run_name() -> str:
    """`ogpu-stream-<n>-inputs` for a list, `ogpu-stream-<file name>` for a file."""
    inputs = flow_run.parameters.get("inputs")
    if isinstance(inputs, str):
        return "ogpu-stream-" + inputs.rstrip("/").rsplit("/", 1)[-1][:60]
    return f"ogpu-stream-{len(inputs) if isinstance(inputs, list) else 0}-inputs"


@batch_flow(
    name="ogpu-stream-batch",
    flow_run_name=stream_run_name,
    run_tags=RUN_TAGS,
)
def stream_batch(
    source: str,
    inputs: StreamInputs,
    payment: Amount,
    network: Network,
    wallet: Wallet,
    storage: Storage,
    *,
    results_url: ResultsUrl = None,
    function_name: FunctionName = None,
    delivery: DeliveryName = "first_response",
    delivery_options: DeliveryOptions = None,
    task_timeout: int = 300,
    max_in_flight: int = 100,
    max_republish: int = 1,
    budget: Budget = None,
    batch_deadline: Seconds = None,
    poll_interval: float = 0.2,
    batch_key: BatchKey = None,
    reputation: str | None = "default",
    reputation_options: dict[str, Any] | None = None,
    cache: bool = True,
) -> StreamSummary:
    """Runs every input as an OpenGPU task with at most `max_in_flight` on chain at once, and
    writes each result to storage as it ends (JSON lines).

    Args:
        source: The source's address (0x...): the service the tasks run on.
        inputs: A JSON-lines file (an fsspec URL: file:///data/in.jsonl, s3://bucket/in.jsonl.gz)
            with one input per line (at most 1 Mi characters), under the input roots (setting
            PREFECT_INTEGRATIONS_OGPU_INPUT_ROOTS; default: the working directory), or a list of
            inputs. Each input is `{"function_name": ..., "data": ...}`, or any JSON value (then
            `function_name` says which function runs it).
        payment: What each task pays, with its unit: "0.01 OGPU", "10 gwei" or "10000000000000000 wei".
        network: The OpenGPU network: a saved OGPUNetwork block (or its name).
        wallet: The client wallet that signs and pays: a saved OGPUWallet block (or its name).
        storage: Where task inputs are written and results read from: a saved OGPUStorage block
            (or its name).
        results_url: The folder (fsspec URL) for the results: JSON-lines parts and manifest.json
            (empty: `results/<batch>` under the storage's write_url).
        function_name: The service function for inputs that do not name one.
        delivery: The delivery method that chooses and pays results (see run_batch).
        delivery_options: The delivery method's options (see run_batch).
        task_timeout: Seconds a task may take: its on-chain expiry.
        max_in_flight: The most tasks on chain at once (1 to 5000).
        max_republish: Times an input that gave no result is published again (0 to 100).
        budget: The most the batch may hold in escrow at once, with its unit ("5 OGPU"); empty:
            `max_in_flight` tasks' worth.
        batch_deadline: Seconds after which nothing more is published (empty: none).
        poll_interval: Seconds between chain polls (0 < s <= 60).
        batch_key: The batch's identity (empty: this flow run's id). A run with the key of an
            earlier one resumes it.
        reputation: The provider-reputation policy ("default", "strict", a plugin's, or "off").
        reputation_options: The policy's options (docs/reputation.md).
        cache: Answer inputs already answered on this network, source and function from the
            result cache (Prefect's result storage), without publishing or paying; off: publish
            every input.

    Returns:
        A StreamSummary: counts by status, what was paid, and where the results are.
    """
    redact_stored_parameters()
    tag_run(RUN_TAGS)
    if not isinstance(inputs, (list, str)):
        raise InvalidInputError(
            "inputs", "a list or a JSON-lines URL (for a generator, call stream_tasks inside your own flow)"
        )
    return stream_tasks(
        source,
        inputs,
        payment,
        network,
        wallet,
        storage,
        results_url=results_url,
        function_name=function_name,
        delivery=delivery,
        delivery_options=delivery_options,
        task_timeout=task_timeout,
        max_in_flight=max_in_flight,
        max_republish=max_republish,
        budget=budget,
        batch_deadline=batch_deadline,
        poll_interval=poll_interval,
        batch_key=batch_key,
        reputation=reputation,
        reputation_options=reputation_options,
        cache=cache,
    )


def stream_tasks(
    source: str,
    inputs: Iterable[Any] | str,
    payment: int,
    network: Any,
    wallet: Any,
    storage: Any,
    *,
    results_url: str | None = None,
    function_name: str | None = None,
    delivery: str = "first_response",
    delivery_options: dict[str, Any] | None = None,
    task_timeout: int = 300,
    max_in_flight: int = 100,
    max_republish: int = 1,
    budget: int | None = None,
    batch_deadline: int | None = None,
    poll_interval: float = 0.2,
    batch_key: str | None = None,
    reputation: str | None = "default",
    reputation_options: dict[str, Any] | None = None,
    cache: bool = True,
) -> StreamSummary:
    """`stream_batch`'s work, callable inside any flow; `inputs` may also be any iterable (its
    items are checked as they are consumed; a list or a file is checked whole first). Without a
    `batch_key` the batch is the calling flow run's."""
    log = get_run_logger()
    started = time.time()
    check_parameters(source, payment, function_name, delivery, delivery_options, batch_key)
    check_limits(task_timeout, batch_deadline, max_republish, budget, poll_interval)
    check_int("max_in_flight", max_in_flight, minimum=1, maximum=MAX_IN_FLIGHT)
    if budget is not None and budget < payment:
        raise BudgetExceededError(
            "budget", f"{format_ogpu(budget)} is less than one task's payment ({format_ogpu(payment)})"
        )
    stream = InputStream.open(inputs, function_name)
    total = stream.check_all()  # -1: an iterable, checked as it is consumed
    strategy = parse_delivery(delivery, delivery_options)
    parse_reputation(reputation, reputation_options)
    client = make_client(network, wallet, storage)
    terms = client.source_terms(source)
    check_source_fits(strategy, terms, task_timeout)
    check_served(client.chain, terms.address, warn=log.warning)  # nobody registered: a warning before publishing
    if budget is None:  # a window's worth: failed tasks still holding escrow count against it
        budget = max_in_flight * payment
    limits = Limits(payment, task_timeout, max_in_flight, max_republish, budget, None, poll_interval)
    first_wave = limits.slots if total < 0 else min(limits.slots, total)
    client.check_batch(terms, first_wave, payment, client.chain.now() + task_timeout)
    key = batch_key or _call_key()
    results_url = _results_url(results_url, storage, key)
    writer = ResultsWriter(results_url, results_storage_options(storage, results_url))
    with hold_batch(key, str(flow_run.get_id())), settled_on_error(key):
        resumed = find_batch(key) is not None
        record = open_batch(client, key, terms.address)
        writer.resume({"batch_key": key, "chain_id": record.chain_id, "client": record.client, "source": record.source})
        if writer.manifest.get("complete"):
            log.info("batch %s is complete already: %s", key, writer.manifest_url)
            return summarize(writer, key, started)
        if batch_deadline is not None:
            limits.deadline = started + batch_deadline
        ledger = Ledger(client, record)
        live_ledger(key, ledger)
        reporter = (
            ProgressReporter(
                total,
                f"OpenGPU streaming batch of {total} input(s) on {terms.address}",
                chain_id=record.chain_id,
                key=key,
                source=terms.address,
            )
            if total > 0
            else None
        )
        before = len(writer.done)
        if before:
            log.info("resuming batch %s: %d input(s) have results already", key, before)
        run = Stream(
            client,
            terms,
            strategy,
            writer,
            ledger,
            limits,
            key=key,
            book=open_book(record.chain_id, reputation, reputation_options),
            resume=resumed,
            progress=(lambda done: reporter.set(before + done)) if reporter is not None else None,
            cache=ResultCache.open(client.chain, terms.address, cache),
        )
        try:
            run.run(stream.items(writer.done))
        finally:
            if reporter is not None:
                reporter.close()
            writer.flush(held_peak_wei=str(run.held_peak))  # every result so far is kept
        if run.held_back:
            held = EscrowReport(
                waiting={t: e for t, e in run.held_back.items() if t not in run.unreadable},
                unreadable=sorted(run.unreadable),
            )
            log.warning("escrow of %d task(s) is still held: %s", len(run.held_back), held.summary())
            report_escrow(held, key)
        raise_if_unfinished(key, run.stopped, sorted(run.unreadable))
        writer.flush(complete=True)
        summary = run.summary(started)
        _report(summary, record.chain_id, terms.address, payment)
        live_ledger(key, drop=True)
    return summary


_calls: dict[str, int] = {}
_calls_lock = threading.Lock()


def _call_key() -> str:
    """The default batch_key: the calling flow run's id, and which stream_tasks call of the run
    this is (a flow may stream several batches; its retry calls them again in the same order)."""
    run_id = str(flow_run.get_id())
    attempt = f"{run_id}/{flow_run.get_run_count()}"  # a retry counts its calls afresh
    with _calls_lock:
        n = _calls[attempt] = _calls.get(attempt, 0) + 1
    return run_id if n == 1 else f"{run_id}-{n}"


def _results_url(given: str | None, storage: Any, key: str) -> str:
    if given is not None:
        return given
    block = load_block(OGPUStorage, storage, "storage")
    if block.kind != "fsspec" or not block.write_url:
        raise InvalidInputError("results_url", "needed with this storage (it has no write_url to put results under)")
    return f"{block.write_url.rstrip('/')}/results/{variable_name(key)}"


def results_storage_options(storage: Any, results_url: str) -> dict[str, Any]:
    """The storage block's fsspec options when the results go under its write_url."""
    block = load_block(OGPUStorage, storage, "storage")
    if block.write_url and results_url.startswith(block.write_url.rstrip("/")):
        return dict(block.storage_options.get_secret_value())
    return {}


def _report(summary: StreamSummary, chain_id: int, source: str, payment: int) -> None:
    from prefect.artifacts import create_markdown_artifact

    done = summary.counts.get("finalized", 0)
    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(summary.counts.items()))
    create_markdown_artifact(
        key="ogpu-stream-summary",
        markdown="\n".join(
            [
                f"# OpenGPU streaming batch: {done}/{summary.inputs} finalized",
                "",
                "| item | value |",
                "|---|---|",
                f"| paid | {ogpu(summary.paid_wei)} OGPU ({summary.paid_wei} wei) |",
                f"| offered per task | {ogpu(payment)} OGPU |",
                f"| most escrow held at once | {ogpu(summary.held_peak_wei)} OGPU |",
                f"| statuses | {statuses} |",
                f"| wall time | {summary.wall_s:.1f} s |",
                f"| results | `{summary.results_url}` ({len(summary.parts)} part(s), manifest.json) |",
            ]
        ),
        description="Streaming batch summary",
    )
    emit_batch_event(
        "completed",
        chain_id,
        summary.batch_key,
        source,
        {
            "inputs": summary.inputs,
            "finalized": done,
            "statuses": summary.counts,
            "spent": str(summary.paid_wei),
            "wall_s": summary.wall_s,
            "results_url": summary.results_url,
        },
    )
    print(f"{done}/{summary.inputs} finalized, paid {ogpu(summary.paid_wei)} OGPU in {summary.wall_s:.1f}s")


if __name__ == "__main__":
    # `python flows/stream_batch.py`: serves the deployment "ogpu-stream-batch/stream-batch".
    stream_batch.serve(
        name="stream-batch",
        tags=list(RUN_TAGS),
        parameters=served_parameters(),
    )
