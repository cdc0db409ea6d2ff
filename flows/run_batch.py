"""`run_batch`: thousands of OpenGPU tasks as one flow call.

Publishes every input as a task (pipelined), waits with a per-task timeout (the tasks' on-chain
expiry) inside a batch deadline, lets the delivery method choose and pay results, settles the
escrow of what gave no result (cancel, or reclaim where the deployment can) and re-publishes it (a
new task, never the same one twice) up to `max_republish` times, and never holds more than `budget`
in escrow. Every parameter is checked before the first transaction; a retry, a re-run or a new run
with the same `batch_key` publishes only what is missing; a failure, crash or cancellation settles
the escrow of what it leaves (ogpu_prefect/batch.py). Results come back in input order, with a
progress artifact while it runs and results, cost and escrow artifacts at the end. `dry_run`
reports the cost and the source's providers without spending anything (batch_estimate.py); an
`escalation` policy raises the payment of inputs that expired untaken, within the budget.
"""

import time
from collections.abc import Sequence
from typing import Any

from prefect import get_run_logger
from prefect.runtime import flow_run

from ogpu_prefect.amounts import Amount, format_ogpu
from ogpu_prefect.batch import (
    Ledger,
    check_limits,
    check_parameters,
    check_source_fits,
    hold_batch,
    live_ledger,
    open_batch,
    raise_if_unfinished,
)
from ogpu_prefect.batch_estimate import BatchEstimate, check_served, estimate_batch, report_estimate
from ogpu_prefect.batch_report import ProgressReporter, report_batch, report_escrow
from ogpu_prefect.chain.errors import BalanceTooLowError, BudgetExceededError, InvalidInputError
from ogpu_prefect.engine import Limits, Rounds, Window, in_input_order
from ogpu_prefect.engine.rounds import batch_deadline as batch_deadline_at
from ogpu_prefect.escalation import parse_escalation
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
    redact_stored_parameters,
    served_parameters,
    tag_run,
)
from ogpu_prefect.models import PublishedTask, TaskInput, TaskResult
from ogpu_prefect.reputation import parse_reputation
from ogpu_prefect.result_cache import ResultCache
from ogpu_prefect.task_ports import Answered, RoundTracker, TaskMarket
from ogpu_prefect.tasks import coerce_inputs, make_client, publish_tasks, wait_for_results
from ogpu_prefect.validation import parse_delivery

# No `from __future__ import annotations` here: a served flow is pickled by value into its run's
# process, and a name used only in a string annotation would not be there to resolve it.

RUN_TAGS = ("ogpu", "ogpu-batch")
"""Every batch's flow run carries these tags (Runs -> filter by tag)."""


def batch_run_name() -> str:
    """The batch's flow run name, `ogpu-batch-<n>-tasks`, from its (validated) inputs."""
    inputs = flow_run.parameters.get("inputs")
    n = len(inputs) if isinstance(inputs, Sequence) and not isinstance(inputs, (str, bytes)) else 0
    return f"ogpu-batch-{n}-tasks"


@batch_flow(
    name="ogpu-run-batch",
    flow_run_name=batch_run_name,
    run_tags=RUN_TAGS,
)
def run_batch(
    source: str,
    inputs: Sequence[Any],
    payment: Amount,
    network: Network,
    wallet: Wallet,
    storage: Storage,
    *,
    function_name: FunctionName = None,
    delivery: DeliveryName = "first_response",
    delivery_options: DeliveryOptions = None,
    task_timeout: int = 300,
    batch_deadline: Seconds = None,
    max_republish: int = 1,
    budget: Budget = None,
    poll_interval: float = 0.1,
    batch_key: BatchKey = None,
    reputation: str | None = "default",
    reputation_options: dict[str, Any] | None = None,
    escalation: str | None = None,
    escalation_options: dict[str, Any] | None = None,
    require_providers: bool = False,
    dry_run: bool = False,
    cache: bool = True,
) -> list[TaskResult] | BatchEstimate:
    """Runs every input as one OpenGPU task on a source, pays the results the delivery method
    chooses, and returns them in input order.

    Each task's escrow is held from the wallet's Vault balance until its result is paid; what
    gives no result (expired, rejected, past the deadline) is settled (cancelled or reclaimed) and
    re-published as a new task, up to `max_republish` times, never beyond `budget`. Every
    parameter is checked before the first transaction. A retry, a re-run or a new run with the
    same `batch_key` publishes only what is missing; a failure, crash or cancellation settles the
    escrow of what it leaves.

    Args:
        source: The source's address (0x...): the service the tasks run on.
        inputs: One task per item: `{"function_name": ..., "data": ...}`, or any JSON value (then
            `function_name` says which function of the service runs it).
        payment: What each task pays, with its unit: "0.01 OGPU", "10 gwei" or
            "10000000000000000 wei" (from Python: an int of wei, or a Decimal of OGPU).
        network: The OpenGPU network: a saved OGPUNetwork block (or its name).
        wallet: The client wallet that signs and pays: a saved OGPUWallet block (or its name).
        storage: Where task inputs are written and results read from: a saved OGPUStorage block
            (or its name).
        function_name: The service function for inputs that do not name one.
        delivery: The delivery method that chooses and pays results; it must fit the source's
            (first_response for FIRST_RESPONSE sources, the others for MANUAL_CONFIRMATION).
        delivery_options: The delivery method's options: manual (policy, window, enough),
            consensus (k), auction (window), or a plugin's own.
        task_timeout: Seconds a task may take: its on-chain expiry, after which its escrow is
            settled and the input re-published.
        batch_deadline: Seconds for the whole batch (empty: enough for every republish round).
        max_republish: Rounds of re-publishing the inputs that gave no result (0 to 100).
        budget: The most the batch may hold in escrow at once, with its unit ("1 OGPU"); empty for
            no ceiling. The first round is refused before any transaction if it does not fit.
        poll_interval: Seconds between chain polls while waiting (0 < s <= 60).
        batch_key: The batch's identity (empty: this flow run's id). A run with the key of an
            earlier one publishes only what that one has not.
        reputation: The provider-reputation policy ("default", "strict", a plugin's, or "off"):
            refused results are recorded per provider in Prefect Variables, banned providers'
            responses ignored, and an input whose every response was refused re-published.
        reputation_options: The policy's options: k (strikes before a ban), forgive_s,
            reject_grace_s, count (docs/reputation.md).
        escalation: What re-publishing pays for inputs whose tasks expired untaken: "escalate"
            (x factor per round up to a cap), a plugin's, or empty/"off" (the same payment).
        escalation_options: The policy's options: escalate's factor (default 1.5) and cap (an
            amount). Never above the budget.
        require_providers: Refuse the batch, before any transaction, when nobody is registered
            to the source (otherwise a warning, and the tasks expire untaken).
        dry_run: Publish nothing and spend nothing: report the escrow the batch needs, the gas
            it costs at the current fee, the client's Vault balance, and the source's providers
            and their environments (an artifact), and return that estimate.
        cache: Answer inputs already answered on this network, source and function from the
            result cache (Prefect's result storage), without publishing or paying; off: publish
            every input.

    Returns:
        A TaskResult per input, in input order (a dry run: its BatchEstimate).
    """
    log = get_run_logger()
    redact_stored_parameters()
    tag_run(RUN_TAGS)
    started = time.time()
    check_parameters(source, payment, function_name, delivery, delivery_options, batch_key)
    check_limits(task_timeout, batch_deadline, max_republish, budget, poll_interval)
    n = _check_inputs(inputs, payment, None if dry_run else budget)  # a dry run reports the budget instead
    items = coerce_inputs(inputs, function_name)
    strategy = parse_delivery(delivery, delivery_options)
    parse_reputation(reputation, reputation_options)  # a bad option fails before any transaction
    escalator = parse_escalation(escalation, escalation_options, payment)
    if escalator is not None and budget is None and getattr(escalator, "cap", None) is None:
        raise InvalidInputError("escalation_options.cap", "an escalating payment needs a cap or a budget")
    client = make_client(network, wallet, storage)
    terms = client.source_terms(source)
    check_source_fits(strategy, terms, task_timeout)
    providers = check_served(client.chain, terms.address, require=require_providers, warn=log.warning)
    expiry = client.chain.now() + task_timeout
    if dry_run:
        try:
            client.check_batch(terms, n, payment, expiry)
        except BalanceTooLowError:
            pass  # the estimate reports the balance
        estimate = estimate_batch(client, terms.address, n, payment, expiry, budget=budget, providers=providers)
        report_estimate(estimate)
        log.info("dry run, nothing published: %s", estimate.model_dump_json())
        return estimate
    results_cache = ResultCache.open(client.chain, terms.address, cache)
    hits = results_cache.lookup(items) if results_cache is not None else {}
    if hits:
        log.info("%d of %d input(s) answered from the result cache: not published", len(hits), n)
    if len(hits) < n:
        client.check_batch(terms, n - len(hits), payment, expiry)
    key = batch_key or str(flow_run.get_id())
    with hold_batch(key, str(flow_run.get_id())):  # one run of a batch_key at a time
        record = open_batch(client, key, terms.address)
        ledger = Ledger(client, record)
        live_ledger(key, ledger)
        deadline = batch_deadline_at(started, task_timeout, max_republish, batch_deadline)
        chain_id = client.chain.network.chain_id
        reporter = ProgressReporter(
            n, f"OpenGPU batch of {n} task(s) on {terms.address}", chain_id=chain_id, key=key, source=terms.address
        )

        results: dict[int, TaskResult] = {}

        # The round's Prefect task runs, looked up in this module when called (a test replaces them).
        def publish(
            batch: list[TaskInput], pay: int, ttl: int, indexes: list[int], attempt: int
        ) -> list[PublishedTask]:
            return publish_tasks(
                terms,  # read once: not again per round
                batch,
                pay,
                network,
                wallet,
                storage,
                ttl=ttl,
                batch_key=key,
                indexes=indexes,
                attempt=attempt,
                reconcile_from_block=record.from_block,
            )

        def wait(published: list[PublishedTask], seconds: float) -> list[TaskResult]:
            return wait_for_results(
                published,
                network,
                wallet,
                storage,
                delivery=delivery,
                delivery_options=delivery_options,
                from_block=record.from_block,
                deadline_s=seconds,
                poll_interval=poll_interval,
                reputation=reputation,
                reputation_options=reputation_options,
                progress=reporter.round_progress(len(results)),
            )

        now = client.chain.now
        window = Window(
            TaskMarket(now, publish),
            RoundTracker(wait, now, deadline),
            ledger,
            Limits(payment, task_timeout, n, max_republish, budget, deadline, poll_interval),
            lambda r: results.__setitem__(r.index, r),
            key=key,
            cache=Answered(results_cache.keys.key, hits, items, results_cache.fill) if results_cache else None,
            rounds=Rounds(escalator, escalation, log),
        )
        try:
            window.run(iter(enumerate(items)))
        finally:
            reporter.close()
        ordered = in_input_order(n, results, window.held_back)
        escrow = window.book.report()
        report_batch(ordered, payment, time.time() - started, terms.address, chain_id=chain_id, key=key)
        if escrow.open_escrow:
            log.warning("escrow of %d task(s) is still held: %s", len(escrow.open_escrow), escrow.summary())
            report_escrow(escrow, key)
        raise_if_unfinished(key, window.stopped, escrow.unreadable)
        live_ledger(key, drop=True)
        return ordered


def _check_inputs(inputs: Any, payment: int, budget: int | None) -> int:
    """The inputs, and a budget the whole first round must fit (the number of inputs)."""
    if isinstance(inputs, (str, bytes, dict)) or not isinstance(inputs, Sequence) or not inputs:
        raise InvalidInputError("inputs", "a non-empty list of inputs")
    if budget is not None and len(inputs) * payment > budget:
        raise BudgetExceededError(
            "budget",
            f"{len(inputs)} tasks x {format_ogpu(payment)} = {format_ogpu(len(inputs) * payment)} "
            f"exceeds the budget of {format_ogpu(budget)}; nothing was published",
        )
    return len(inputs)


if __name__ == "__main__":
    # `python flows/run_batch.py`: serves the deployment "ogpu-run-batch/run-batch" (run it from the
    # UI's form or `prefect deployment run`); the defaults name the blocks `./dev demo` saves.
    run_batch.serve(
        name="run-batch",
        tags=list(RUN_TAGS),
        parameters=served_parameters(),
    )
