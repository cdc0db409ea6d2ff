"""A bench's scratch folder under .ogpu/: payloads, worker logs, Prefect's database. Removed after
a clean run (each 10,000-task run leaves ~30,000 files); kept, and its path printed, after a
failure, for the logs."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    root = Path(".ogpu").resolve()
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=root))
    try:
        yield tmp
    except BaseException:
        print(f"kept {tmp} for its logs")
        raise
    shutil.rmtree(tmp, ignore_errors=True)
