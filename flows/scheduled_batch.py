"""`scheduled_batch`: the "scheduled batch job" user. Every run picks up the input files that
landed in an inbox folder (any fsspec URL), runs them all as one `run_batch`, writes each file's
results next to it in an outbox, and moves the file to `done/`, so a file is processed once.

An input file is JSON: a list of inputs, or one input. Serve it on a cron schedule:

    uv run python flows/scheduled_batch.py   # serves the deployment "nightly" (02:00 every day)
"""

from __future__ import annotations

import json
from typing import Any

import fsspec
from prefect import flow, get_run_logger

from ogpu_prefect.flows.run_batch import run_batch
from ogpu_prefect.tasks import BlockOrName


@flow(name="ogpu-scheduled-batch", log_prints=True)
def scheduled_batch(
    inbox: str,
    source: str,
    payment: int,
    network: BlockOrName,
    wallet: BlockOrName,
    storage: BlockOrName,
    *,
    outbox: str | None = None,
    pattern: str = "*.json",
    function_name: str | None = None,
    delivery: str = "first_response",
    delivery_options: dict[str, Any] | None = None,
    task_timeout: int = 300,
    budget: int | None = None,
) -> dict[str, str]:
    """Runs every `pattern` file in `inbox` as one batch; returns {input file: results file}."""
    log = get_run_logger()
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


if __name__ == "__main__":
    import os

    scheduled_batch.serve(
        name="nightly",
        cron=os.environ.get("OGPU_BATCH_CRON", "0 2 * * *"),
        parameters={
            "inbox": os.environ.get("OGPU_BATCH_INBOX", "file://./inbox"),
            "source": os.environ["OGPU_SOURCE"],
            "payment": int(os.environ.get("OGPU_PAYMENT_WEI", str(10**16))),
            "network": os.environ.get("OGPU_NETWORK_BLOCK", "devnet"),
            "wallet": os.environ.get("OGPU_WALLET_BLOCK", "client"),
            "storage": os.environ.get("OGPU_STORAGE_BLOCK", "payloads"),
        },
    )
