"""A throwaway HTTP file server on 127.0.0.1 for content-addressed JSON payloads (source metadata,
task configs, responses) when no other storage is configured: the chain stores URLs, so the
payloads must be fetchable over real HTTP."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from functools import partial
from pathlib import Path
from typing import Any


class LocalPayloadServer:
    def __init__(self, root: Path, port: int = 0) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        handler = partial(_QuietHandler, directory=str(self.root))
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def __enter__(self) -> LocalPayloadServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def put_json(self, obj: Any) -> str:
        """Stores `obj` as canonical JSON named by its sha256; returns its URL. Idempotent."""
        body = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
        name = hashlib.sha256(body).hexdigest() + ".json"
        path = self.root / name
        if not path.exists():
            path.write_bytes(body)
        return f"{self.base_url}/{name}"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass
