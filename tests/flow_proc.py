"""`python -m tests.flow_proc` runs one of ogpu-prefect's flows in a process of its own, for tests
that point it at a Prefect server other than the session's harness. Prefect keeps per-process
services (task-tag concurrency leases) bound to the first API a process talked to, so a flow run
in-process against a server that later stops breaks every later flow of the test session.

stdin: {"flow": "run_batch", "args": [...], "kwargs": {...}} (blocks by saved
name); stdout's last line: the results as a JSON list."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def run_flow_elsewhere(
    api_url: str,
    flow: str,
    *args: Any,
    timeout: float = 600,
    via: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    **kwargs: Any,
) -> list[Any]:
    """The flow's TaskResults, run in a child process on the Prefect API at `api_url`. `via`: a
    command prefix (e.g. `ip netns exec <host>`); `env`: the child's whole environment (default
    this process's)."""
    from ogpu_prefect.models import TaskResult

    spec = json.dumps({"flow": flow, "args": args, "kwargs": kwargs})
    done = subprocess.run(
        [*via, sys.executable, "-m", "tests.flow_proc"],
        input=spec,
        cwd=REPO,
        env={**(os.environ if env is None else env), "PREFECT_API_URL": api_url},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return [TaskResult.model_validate(r) for r in json.loads(done.stdout.strip().splitlines()[-1])]


def main() -> int:
    import importlib

    spec = json.loads(sys.stdin.read())
    flow = getattr(importlib.import_module(f"ogpu_prefect.flows.{spec['flow']}"), spec["flow"])
    results = flow(*spec["args"], **spec["kwargs"])
    print(json.dumps([r.model_dump(mode="json") for r in results]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
