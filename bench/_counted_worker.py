"""`prefect worker start ...` (this script's arguments, as after `python -m prefect`) in a process
that also writes its `ogpu_prefect.events` sender's counters (events sent, dropped, still queued)
to the JSON file $OGPU_BENCH_EVENTS_FILE: every second, and at exit after the sender's own final
flush. The benches count what the workers emitted with it; the worker itself is unchanged.

    python bench/_counted_worker.py worker start --pool P --type ogpu-provider --name N
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import threading
import time
from pathlib import Path

OUT = Path(os.environ["OGPU_BENCH_EVENTS_FILE"])


def dump(final: bool = False) -> None:
    from ogpu_prefect import events

    s = events.sender()
    data = {"sent": s.sent, "dropped": s.dropped, "unsent": s.unsent, "final": final}
    tmp = OUT.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(OUT)


def every_second() -> None:
    while True:
        time.sleep(1.0)
        try:
            dump()
        except Exception:  # noqa: BLE001 - best effort; the final dump says the last word
            pass


if __name__ == "__main__":
    from prefect.cli import app  # imported here first: an import from the thread raced this one

    from ogpu_prefect import events  # noqa: F401

    # Registered before the sender exists: atexit runs last-in first-out, so this runs after the
    # sender's own flush (registered when it is created).
    atexit.register(dump, True)
    threading.Thread(target=every_second, daemon=True, name="bench-event-counts").start()
    sys.argv = ["prefect", *sys.argv[1:]]
    app()
