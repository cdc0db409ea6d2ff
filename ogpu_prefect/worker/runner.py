"""Runs a source written with the official `ogpu.service` API, unchanged, on a chosen port.

`ogpu.service` always serves on 0.0.0.0:5555, so two services on one host would collide. This
runner imports the source's module (its `@ogpu.service.expose()` handlers register themselves),
then starts the same server bound to 127.0.0.1:$PORT:

    python -m ogpu_prefect.worker.runner path/to/main.py     # PORT and CALLBACK_URL from the env

A source opts in with the `x-ogpu-local` extension of its compose service (see
ogpu_prefect/compose.py).

Each line a handler writes to stdout or stderr while it runs a task is prefixed with that task's
address (`[0x...] `), so the worker puts it in that task's record alone, however many tasks the
service runs at once (the worker's `route_log` routes a line by the task it names).
"""

from __future__ import annotations

import io
import os
import runpy
import sys
import threading
from contextvars import ContextVar
from typing import Any

CURRENT_TASK: ContextVar[str | None] = ContextVar("ogpu_current_task", default=None)
"""The task whose request (and background handler) this code runs for."""


class TagTasks:
    """ASGI middleware: a request to `/run/<function>/<task>`, and the handler that ogpu.service
    runs after answering it (a background task of the same request, in a thread that inherits
    the request's context), run with CURRENT_TASK set."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        parts = str(scope.get("path", "")).split("/") if scope.get("type") == "http" else []
        task = parts[3] if len(parts) == 4 and parts[1] == "run" else None
        token = CURRENT_TASK.set(task) if task else None
        try:
            await self.app(scope, receive, send)
        finally:
            if token is not None:
                CURRENT_TASK.reset(token)


class TaskTaggedStream(io.TextIOBase):
    """A text stream that writes each line written for a task whole, starting with `[<task>] `.
    A thread's partial line is held until its newline (print writes the text and the newline
    separately), so two handlers printing at once never share a line."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self._partial = threading.local()  # per thread: concurrent handlers write their own lines
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        task = CURRENT_TASK.get()
        held = getattr(self._partial, "text", "")
        if task is None and not held:
            return self.raw.write(text)
        lines = (held + text).splitlines(keepends=True)
        self._partial.text = lines.pop() if lines and not lines[-1].endswith("\n") else ""
        if lines:
            tag = f"[{task}] " if task else ""
            with self._lock:
                self.raw.write("".join(tag + line for line in lines))
        return len(text)

    def flush(self) -> None:
        # A held partial line stays held: colorama (ogpu.service's logger) flushes after every
        # piece of a line, which would split the line and tag each piece.
        self.raw.flush()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return str(getattr(self.raw, "encoding", "utf-8"))

    def fileno(self) -> int:
        return int(self.raw.fileno())


class _TaggingUvicorn:
    """Stands in for the `uvicorn` module in ogpu.service's server: runs its app behind TagTasks."""

    def __init__(self, uvicorn: Any) -> None:
        self.uvicorn = uvicorn

    def run(self, app: Any, **kwargs: Any) -> None:
        self.uvicorn.run(TagTasks(app), **kwargs)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m ogpu_prefect.worker.runner <source main.py>", file=sys.stderr)
        return 2
    port = int(os.environ.get("PORT", "5555"))
    # Before ogpu.service's logger binds to stderr, so that its lines are written whole too.
    sys.stdout, sys.stderr = TaskTaggedStream(sys.stdout), TaskTaggedStream(sys.stderr)
    import ogpu.service.server as server

    server.SERVICE_HOST = "127.0.0.1"
    server.SERVICE_PORT = port
    server.uvicorn = _TaggingUvicorn(server.uvicorn)  # type: ignore[assignment]
    path = os.path.abspath(argv[0])
    sys.path.insert(0, os.path.dirname(path))
    # Run the module as a library (not as __main__), so its own `start()` call does not fire; its
    # handlers register on import.
    runpy.run_path(path, run_name="ogpu_source")
    server.start()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
