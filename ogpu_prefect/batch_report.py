"""run_batch's artifacts: progress while it runs, then the results table, the cost summary and,
when any escrow is still held, where it stands."""

from __future__ import annotations

import contextvars
import json
import threading
from collections.abc import Callable
from typing import Any

from .escrow import EscrowReport
from .events import emit_batch_event
from .models import TaskResult

ETHER = 10**18
PREVIEW_CHARS = 60


def ogpu(wei: int) -> str:
    return f"{wei / ETHER:.6f}"


class ProgressReporter:
    """The progress artifact and the `ogpu.batch.started` / `.progress` events, updated from a
    thread every few seconds: the wait loop never blocks on the API (a server on SQLite under load
    can hold a write for seconds). Only the latest value is sent."""

    def __init__(
        self, total: int, description: str, *, chain_id: int, key: str, source: str, every_s: float = 2.0
    ) -> None:
        from prefect.artifacts import create_progress_artifact

        self.total, self.every_s = max(total, 1), every_s
        self.identity = (chain_id, key, source)
        self.artifact_id = create_progress_artifact(progress=0.0, key="ogpu-batch-progress", description=description)
        emit_batch_event("started", *self.identity, {"inputs": total})
        self._value: float | None = None
        self._done = 0
        self._changed = threading.Event()
        self._closing = threading.Event()  # wakes the loop from its pause: close() must not wait it out
        self._closed = False
        self._client: Any = None
        self._sending = threading.Lock()
        # In a copy of this context: the thread writes to the same Prefect API (temporary_settings).
        self._thread = threading.Thread(
            target=contextvars.copy_context().run, args=(self._loop,), name="ogpu-batch-progress", daemon=True
        )
        self._thread.start()

    def round_progress(self, done_before: int) -> Callable[[int, int], None]:
        """The callback for one round's wait: (done in the round, its size) -> overall progress."""
        return lambda done, _: self.set(min(done_before + done, self.total))

    def set(self, done: int) -> None:
        self._done = done
        self._value = 100.0 * done / self.total
        self._changed.set()

    def close(self) -> None:
        self._closed = True
        self._closing.set()
        self._changed.set()
        self._thread.join(timeout=30)
        self._send(100.0, final=True)
        with self._sending:
            if self._client is not None:
                self._client.__exit__(None, None, None)
                self._client = None

    def _loop(self) -> None:
        while not self._closed:
            self._changed.wait()
            self._changed.clear()
            if self._closed or self._value is None:
                continue
            self._send(self._value)
            emit_batch_event(
                "progress", *self.identity, {"done": self._done, "inputs": self.total, "percent": round(self._value, 1)}
            )
            self._closing.wait(self.every_s)

    def _send(self, progress: float, final: bool = False) -> None:
        """Updates the progress artifact through one client kept for the batch (Prefect's
        `update_progress_artifact` builds a client, and its TLS context, at each call: a profile
        of a 1,000-task batch put 8% of the client's CPU there)."""
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.actions import ArtifactUpdate

        with self._sending:  # the loop thread, or close() after it
            if self._closed and not final:
                return
            try:
                if self._client is None:
                    self._client = get_client(sync_client=True).__enter__()
                self._client.update_artifact(self.artifact_id, ArtifactUpdate(data=progress))
            except Exception:  # progress is cosmetic; the final update happens in close()
                pass


def preview(result: Any) -> str:
    """A short rendering of a result payload for the table (the envelope's `result`)."""
    if isinstance(result, dict) and "result" in result:
        result = result["result"]
    if result is None:
        return ""
    text = json.dumps(result, sort_keys=True, separators=(",", ":"), default=str)
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


def report_batch(results: list[TaskResult], payment: int, wall: float, source: str, *, chain_id: int, key: str) -> None:
    """The results table and cost summary artifacts, and the `ogpu.batch.completed` event."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    # Columns, not a dict per row: half the JSON and half the peak memory at 10,000 tasks.
    columns = {
        "input": [r.index for r in results],
        "status": [r.status for r in results],
        "result": [preview(r.result) for r in results],
        "latency (s)": [f"{r.latency_s:.2f}" if r.latency_s is not None else "" for r in results],
        "payment (OGPU)": [ogpu(r.payment) if r.status == "finalized" else "" for r in results],
        "republished": [r.republished for r in results],
        "provider": [r.provider or "" for r in results],
        "task": [r.task or "" for r in results],
        "reason": [r.reason or "" for r in results],
    }
    create_table_artifact(columns, key="ogpu-batch-results", description=f"OpenGPU batch on source {source}")
    del columns
    done = [r for r in results if r.status == "finalized"]
    spent = sum(r.payment for r in done)
    lat = sorted(r.latency_s for r in done if r.latency_s is not None)
    p50 = lat[len(lat) // 2] if lat else 0.0
    p95 = lat[min(len(lat) - 1, int(len(lat) * 0.95))] if lat else 0.0
    by_status: dict[str, int] = {}
    for r in results:
        by_status[r.status] = by_status.get(r.status, 0) + 1
    create_markdown_artifact(
        key="ogpu-batch-cost",
        markdown="\n".join(
            [
                f"# OpenGPU batch: {len(done)}/{len(results)} finalized",
                "",
                "| item | value |",
                "|---|---|",
                f"| spent | {ogpu(spent)} OGPU ({spent} wei) |",
                f"| offered per task | {ogpu(payment)} OGPU |",
                f"| average paid per result | {ogpu(spent // max(len(done), 1))} OGPU |",
                f"| statuses | {', '.join(f'{k}: {v}' for k, v in sorted(by_status.items()))} |",
                f"| wall time | {wall:.1f} s |",
                f"| latency p50 / p95 | {p50:.2f} s / {p95:.2f} s |",
            ]
        ),
        description="Cost summary",
    )
    emit_batch_event(
        "completed",
        chain_id,
        key,
        source,
        {
            "inputs": len(results),
            "finalized": len(done),
            "statuses": by_status,
            "spent": str(spent),
            "wall_s": round(wall, 1),
            "latency_p50_s": round(p50, 3),
            "latency_p95_s": round(p95, 3),
        },
    )
    print(f"{len(done)}/{len(results)} finalized, spent {ogpu(spent)} OGPU in {wall:.1f}s")


def escrow_markdown(report: EscrowReport, key: str) -> str:
    lines = [f"# Escrow of batch `{key}`", "", report.summary(), ""]
    if report.waiting:
        lines += [
            "Attempted by a provider and unfinished: not cancellable; the escrow returns with the "
            "network's expiry handling (or pays a late response).",
            "",
            "| task | expiry (unix) |",
            "|---|---|",
        ]
        lines += [f"| `{t}` | {expiry} |" for t, expiry in sorted(report.waiting.items(), key=lambda kv: kv[1])]
    if report.unreadable:
        lines += ["", "Could not be read now (settle again with a run of the same batch_key):", ""]
        lines += [f"- `{t}`" for t in report.unreadable]
    return "\n".join(lines)


def report_escrow(report: EscrowReport, key: str) -> None:
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(
        key="ogpu-batch-escrow", markdown=escrow_markdown(report, key), description="Escrow still held"
    )
