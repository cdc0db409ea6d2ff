"""Runs a source written with the official `ogpu.service` API, unchanged, on a chosen port.

`ogpu.service` always serves on 0.0.0.0:5555, so two services on one host would collide. This
runner imports the source's module (its `@ogpu.service.expose()` handlers register themselves),
then starts the same server bound to 127.0.0.1:$PORT:

    python -m ogpu_prefect.worker.runner path/to/main.py     # PORT and CALLBACK_URL from the env

A source opts in with the `x-ogpu-local` extension of its compose service (see
ogpu_prefect/compose.py).
"""

from __future__ import annotations

import os
import runpy
import sys


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m ogpu_prefect.worker.runner <source main.py>", file=sys.stderr)
        return 2
    port = int(os.environ.get("PORT", "5555"))
    import ogpu.service.server as server

    server.SERVICE_HOST = "127.0.0.1"
    server.SERVICE_PORT = port
    path = os.path.abspath(argv[0])
    sys.path.insert(0, os.path.dirname(path))
    # Run the module as a library (not as __main__), so its own `start()` call does not fire; its
    # handlers register on import.
    runpy.run_path(path, run_name="ogpu_source")
    server.start()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
