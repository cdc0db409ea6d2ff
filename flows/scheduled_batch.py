"""`scheduled_batch`: the "scheduled batch job" user. Every run picks up the input files that
landed in an inbox folder (any fsspec URL), runs them all as one `run_batch`, writes each file's
results next to it in an outbox, and moves the file to `done/`, so a file is processed once.

An input file is JSON: a list of inputs, or one input. Deploy it from the repository's prefect.yaml
(`prefect deploy --name nightly`), or serve it on a cron schedule:

    OGPU_SOURCE=0x... uv run python flows/scheduled_batch.py   # serves "nightly" (02:00 every day)
"""

import json
from typing import Any

import fsspec
from prefect import get_run_logger
from prefect.runtime import flow_run

from ogpu_prefect.amounts import Amount
from ogpu_prefect.flowkit import (
    Budget,
    DeliveryName,
    DeliveryOptions,
    FunctionName,
    Network,
    Storage,
    Wallet,
    or_none,
    redacting_flow,
    tag_run,
)
from ogpu_prefect.flows.run_batch import run_batch

# No `from __future__ import annotations` here: a served flow is pickled by value into its run's
# process, and a name used only in a string annotation would not be there to resolve it.

RUN_TAGS = ("ogpu", "ogpu-scheduled-batch")
Outbox = or_none(str, "URL", "<inbox>/results")


def inbox_run_name() -> str:
    """The run's name, `ogpu-inbox-<folder>`."""
    inbox = str(flow_run.parameters.get("inbox") or "")
    return f"ogpu-inbox-{inbox.rstrip('/').rsplit('/', 1)[-1] or 'root'}"


@redacting_flow(name="ogpu-scheduled-batch", flow_run_name=inbox_run_name, run_tags=RUN_TAGS, log_prints=True)
def scheduled_batch(
    inbox: str,
    source: str,
    payment: Amount,
    network: Network,
    wallet: Wallet,
    storage: Storage,
    *,
    outbox: Outbox = None,
    pattern: str = "*.json",
    function_name: FunctionName = None,
    delivery: DeliveryName = "first_response",
    delivery_options: DeliveryOptions = None,
    task_timeout: int = 300,
    budget: Budget = None,
) -> dict[str, str]:
    """Runs every input file in an inbox folder as one OpenGPU batch (run_batch), writes each
    file's results to the outbox and moves the file to `done/`.

    Args:
        inbox: The inbox folder, as an fsspec URL (file:///data/inbox, s3://bucket/inbox, ...).
        source: The source's address (0x...): the service the tasks run on.
        payment: What each task pays, with its unit: "0.01 OGPU", "10 gwei" or
            "10000000000000000 wei" (from Python: an int of wei, or a Decimal of OGPU).
        network: The OpenGPU network: a saved OGPUNetwork block (or its name).
        wallet: The client wallet that signs and pays: a saved OGPUWallet block (or its name).
        storage: Where task inputs are written and results read from: a saved OGPUStorage block
            (or its name).
        outbox: Where `<file>.results.json` goes (empty: `<inbox>/results`).
        pattern: Which files of the inbox are inputs (a glob).
        function_name: The service function for inputs that do not name one.
        delivery: The delivery method that chooses and pays results (see run_batch).
        delivery_options: The delivery method's options (see run_batch).
        task_timeout: Seconds a task may take (its on-chain expiry).
        budget: The most the batch may hold in escrow at once, with its unit; empty for no ceiling.

    Returns:
        {input file: results file} for every file processed.
    """
    log = get_run_logger()
    tag_run(RUN_TAGS)
    fs, root = fsspec.core.url_to_fs(inbox)
    root = root.rstrip("/")
    out_fs, out_root = fsspec.core.url_to_fs(outbox or f"{inbox.rstrip('/')}/results")
    out_root = out_root.rstrip("/")
    files = sorted(fs.glob(f"{root}/{pattern}"))
    if not files:
        log.info("inbox %s is empty", inbox)
        return {}
    inputs: list[Any] = []
    spans: list[tuple[str, int, int]] = []
    for path in files:
        data = json.loads(fs.cat_file(path))
        items = data if isinstance(data, list) else [data]
        spans.append((path, len(inputs), len(inputs) + len(items)))
        inputs.extend(items)
    log.info("%d file(s), %d input(s)", len(files), len(inputs))
    results = run_batch(
        source,
        inputs,
        payment,
        network,
        wallet,
        storage,
        function_name=function_name,
        delivery=delivery,
        delivery_options=delivery_options,
        task_timeout=task_timeout,
        budget=budget,
    )
    out_fs.makedirs(out_root, exist_ok=True)
    fs.makedirs(f"{root}/done", exist_ok=True)
    written = {}
    for path, start, end in spans:
        name = path.rsplit("/", 1)[-1]
        target = f"{out_root}/{name.rsplit('.', 1)[0]}.results.json"
        out_fs.pipe_file(target, json.dumps([r.model_dump(mode="json") for r in results[start:end]], indent=1).encode())
        fs.mv(path, f"{root}/done/{name}")
        written[path] = target
    return written


def serve_nightly() -> None:
    """`python flows/scheduled_batch.py`: serves the deployment "nightly" on a cron schedule
    (`OGPU_BATCH_CRON`, default 02:00 every day) with its parameters from the environment."""
    import os

    payment = os.environ.get("OGPU_PAYMENT", "")
    if not payment and os.environ.get("OGPU_PAYMENT_WEI"):
        payment = f"{int(os.environ['OGPU_PAYMENT_WEI'])} wei"
    scheduled_batch.serve(
        name="nightly",
        cron=os.environ.get("OGPU_BATCH_CRON", "0 2 * * *"),
        tags=list(RUN_TAGS),
        parameters={
            "inbox": os.environ.get("OGPU_BATCH_INBOX", "file://./inbox"),
            "source": os.environ["OGPU_SOURCE"],
            "payment": payment or "0.01 OGPU",
            "network": os.environ.get("OGPU_NETWORK_BLOCK", "devnet"),
            "wallet": os.environ.get("OGPU_WALLET_BLOCK", "client"),
            "storage": os.environ.get("OGPU_STORAGE_BLOCK", "devnet"),
        },
    )


if __name__ == "__main__":
    serve_nightly()
