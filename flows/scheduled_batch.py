"""`scheduled_batch`: the "scheduled batch job" user. Every run picks up the input files that
landed in an inbox folder (any fsspec URL), streams them all as one batch (`stream_tasks`: at most
`max_in_flight` tasks on chain, memory bounded whatever the files hold), writes each file's
results next to it in an outbox, and moves the file to `done/`, so a file is processed once.

An input file is JSON (a list of inputs, or one input; results: `<name>.results.json`, a list in
input order) or JSON lines (`*.jsonl`, one input per line; results: `<name>.results.jsonl`, one
line per input as it ended, `index` its line among the inputs). Deploy it from the repository's
prefect.yaml (`prefect deploy --name nightly`), or serve it on a cron schedule:

    PREFECT_INTEGRATIONS_OGPU_BATCH_SOURCE=0x... uv run python flows/scheduled_batch.py  # serves "nightly" (02:00)
"""

import bisect
import hashlib
import json
import os
from collections.abc import Iterator
from typing import Any

import fsspec
from prefect import get_run_logger
from prefect.runtime import flow_run

from ogpu_prefect.amounts import Amount
from ogpu_prefect.chain.errors import InvalidInputError
from ogpu_prefect.flowkit import (
    Budget,
    DeliveryName,
    DeliveryOptions,
    FunctionName,
    Network,
    Storage,
    Wallet,
    batch_flow,
    or_none,
    redact_stored_parameters,
    served_parameters,
    tag_run,
)
from ogpu_prefect.flows.stream_batch import results_storage_options, stream_tasks
from ogpu_prefect.stream_io import check_under_roots, json_lines, read_results
from ogpu_prefect.validation import refuse_secret

# No `from __future__ import annotations` here: a served flow is pickled by value into its run's
# process, and a name used only in a string annotation would not be there to resolve it.

RUN_TAGS = ("ogpu", "ogpu-scheduled-batch")
MAX_JSON_FILE_BYTES = 8 * 1024 * 1024
"""Largest `.json` inbox file (parsed whole, ~6x its size in memory); `.jsonl` files of any size
are read a line at a time."""
Outbox = or_none(str, "URL", "<inbox>/results")


def inbox_run_name() -> str:
    """The run's name, `ogpu-inbox-<folder>`."""
    inbox = str(flow_run.parameters.get("inbox") or "")
    return f"ogpu-inbox-{inbox.rstrip('/').rsplit('/', 1)[-1] or 'root'}"


@batch_flow(
    name="ogpu-scheduled-batch",
    flow_run_name=inbox_run_name,
    run_tags=RUN_TAGS,
)
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
    max_in_flight: int = 100,
    budget: Budget = None,
) -> dict[str, str]:
    """Streams every input file in an inbox folder as one OpenGPU batch, writes each file's
    results to the outbox and moves the file to `done/`.

    Args:
        inbox: The inbox folder, as an fsspec URL (file:///data/inbox, s3://bucket/inbox, ...).
        source: The source's address (0x...): the service the tasks run on.
        payment: What each task pays, with its unit: "0.01 OGPU", "10 gwei" or
            "10000000000000000 wei" (from Python: an int of wei, or a Decimal of OGPU).
        network: The OpenGPU network: a saved OGPUNetwork block (or its name).
        wallet: The client wallet that signs and pays: a saved OGPUWallet block (or its name).
        storage: Where task inputs are written and results read from: a saved OGPUStorage block
            (or its name).
        outbox: Where `<file>.results.json` (or `.results.jsonl`) goes (empty: `<inbox>/results`).
        pattern: Which files of the inbox are inputs (a glob: `*.json`, `*.jsonl`, `*.json*`).
        function_name: The service function for inputs that do not name one.
        delivery: The delivery method that chooses and pays results (see run_batch).
        delivery_options: The delivery method's options (see run_batch).
        task_timeout: Seconds a task may take (its on-chain expiry).
        max_in_flight: The most tasks on chain at once.
        budget: The most the batch may hold in escrow at once, with its unit; empty: `max_in_flight`
            tasks' worth.

    Returns:
        {input file: results file} for every file processed.
    """
    redact_stored_parameters()
    log = get_run_logger()
    tag_run(RUN_TAGS)
    fs, root = fsspec.core.url_to_fs(check_under_roots("inbox", inbox))
    root = root.rstrip("/")
    out_fs, out_root = fsspec.core.url_to_fs(check_under_roots("outbox", outbox or f"{inbox.rstrip('/')}/results"))
    out_root = out_root.rstrip("/")
    files = inbox_files(fs, root, pattern)
    if not files:
        log.info("inbox %s is empty", inbox)
        return {}
    inputs = InboxInputs(fs, files)
    log.info("%d file(s), %d input(s)", len(files), len(inputs))
    summary = stream_tasks(
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
        max_in_flight=max_in_flight,
        budget=budget,
        batch_key=inbox_key(inbox, fs, files),
    )
    out_fs.makedirs(out_root, exist_ok=True)
    options = results_storage_options(storage, summary.results_url)
    written = write_outbox(inputs, summary.results_url, out_fs, out_root, options)
    fs.makedirs(f"{root}/done", exist_ok=True)
    for path in files:
        fs.mv(path, f"{root}/done/{path.rsplit('/', 1)[-1]}")
    return written


def inbox_files(fs: Any, root: str, pattern: str) -> list[str]:
    """The files `pattern` matches inside the inbox `root`, not in its `done/`: a pattern that
    could leave the inbox (absolute, `..`, a URL) is refused, and a match whose real path is
    elsewhere (a symlink) is skipped, so nothing outside the inbox is read or moved."""
    refuse_secret("pattern", pattern)
    parts = pattern.replace("\\", "/").split("/")
    if not pattern or pattern.startswith(("/", "~")) or "://" in pattern or ".." in parts:
        raise InvalidInputError("pattern", f"{pattern[:100]!r} must be a glob inside the inbox (no /, ~, .. or URL)")
    local = "file" in ((fs.protocol,) if isinstance(fs.protocol, str) else fs.protocol)
    real_root = os.path.realpath(root) if local else root
    found = []
    for path in sorted(fs.glob(f"{root}/{pattern}")):
        real = os.path.realpath(path) if local else path
        inside = real.startswith(real_root + "/") and not real.startswith(f"{real_root}/done/")
        if inside and fs.isfile(path):
            found.append(path)
    return found


def inbox_key(inbox: str, fs: Any, files: list[str]) -> str:
    """The batch_key of these inbox files: the same files (names, sizes, versions) are the same
    batch, so a run after a crash or a failure after publishing resumes it, paying nothing twice."""
    parts = [inbox.rstrip("/")]
    for path in files:
        info = fs.info(path)
        version = next((info[k] for k in ("ETag", "etag", "mtime", "LastModified", "updated") if k in info), "")
        parts.append(f"{path}\0{info.get('size')}\0{version}")
    return "inbox-" + hashlib.sha256("\n".join(parts).encode()).hexdigest()[:24]


class InboxInputs:
    """The inbox's files as one sequence of inputs (re-iterable, read a file at a time), and which
    span of it each file is."""

    def __init__(self, fs: Any, files: list[str]) -> None:
        self.fs, self.files = fs, files
        self.spans: list[tuple[str, int, int]] = []
        n = 0
        for path in files:
            count = sum(1 for _ in self._items(path))
            self.spans.append((path, n, n + count))
            n += count

    def __len__(self) -> int:
        return self.spans[-1][2] if self.spans else 0

    def __iter__(self) -> Iterator[Any]:
        for path in self.files:
            yield from self._items(path)

    def _items(self, path: str) -> Iterator[Any]:
        if path.endswith(".jsonl"):
            with self.fs.open(path, "rt", encoding="utf-8") as f:
                yield from json_lines(f, path, "inbox")
            return
        with self.fs.open(path, "rb") as f:  # a .json file is parsed whole: its size is capped first
            body = f.read(MAX_JSON_FILE_BYTES + 1)
        if len(body) > MAX_JSON_FILE_BYTES:
            raise InvalidInputError(
                "inbox", f"{path} is over the {MAX_JSON_FILE_BYTES:,}-byte limit of a .json file: write it as .jsonl"
            )
        try:
            data = json.loads(body)
        except ValueError:
            raise InvalidInputError("inbox", f"{path} is not JSON") from None
        del body
        yield from data if isinstance(data, list) else [data]


def write_outbox(
    inputs: InboxInputs, results_url: str, out_fs: Any, out_root: str, storage_options: dict[str, Any] | None = None
) -> dict[str, str]:
    """Each file's results, from the batch's results (read a part at a time): a JSON list in input
    order for a .json file, JSON lines as they ended for a .jsonl file (`index`: within the file)."""
    starts = [start for _, start, _ in inputs.spans]
    targets, lists, handles = {}, {}, {}
    for path, _, _ in inputs.spans:
        stem = path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        jsonl = path.endswith(".jsonl")
        targets[path] = f"{out_root}/{stem}.results.json{'l' if jsonl else ''}"
        if jsonl:
            handles[path] = out_fs.open(targets[path], "wt", encoding="utf-8")
        else:
            lists[path] = []
    try:
        for r in read_results(results_url, storage_options):
            path, start, _ = inputs.spans[bisect.bisect_right(starts, r["index"]) - 1]
            r["index"] -= start
            if path in handles:
                handles[path].write(json.dumps(r) + "\n")
            else:
                lists[path].append(r)
    finally:
        for h in handles.values():
            h.close()
    for path, rows in lists.items():
        out_fs.pipe_file(targets[path], json.dumps(sorted(rows, key=lambda r: r["index"]), indent=1).encode())
    return targets


def serve_nightly() -> None:
    """`python flows/scheduled_batch.py`: serves the deployment "nightly" on a cron schedule
    (the `batch_cron` setting, default 02:00 every day) with its parameters from the settings
    (`batch_source`, `batch_inbox`, flowkit.served_parameters)."""
    from ogpu_prefect.settings import get_settings

    s = get_settings()
    if not s.batch_source:
        raise SystemExit("set PREFECT_INTEGRATIONS_OGPU_BATCH_SOURCE (or OGPU_SOURCE) to the source to serve")
    scheduled_batch.serve(
        name="nightly",
        cron=s.batch_cron,
        tags=list(RUN_TAGS),
        parameters={"inbox": s.batch_inbox, "source": s.batch_source, **served_parameters()},
    )


if __name__ == "__main__":
    serve_nightly()
