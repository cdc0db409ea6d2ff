"""A threaded HTTP server on 127.0.0.1 that runs in the background of this process: the devnet's
payload file server, and the test stubs (IPFS API, fault proxy) are all one of these."""

from __future__ import annotations

import http.server
import threading
from typing import Any


class LoopbackServer:
    """Context manager around a ThreadingHTTPServer bound to 127.0.0.1 (port 0: any free one), or
    to another local address (`host`: the docker bridge's, for containers' callbacks)."""

    def __init__(self, handler: type[http.server.BaseHTTPRequestHandler], port: int = 0, *,
                 host: str = "127.0.0.1") -> None:
        self._httpd = http.server.ThreadingHTTPServer((host, port), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True, name="ogpu-loopback")

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self._httpd.server_address[0]}:{self.port}"

    def start(self) -> LoopbackServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """A static file handler that does not log every request to stderr, and keeps connections
    alive (HTTP/1.1; every reply has a Content-Length): a worker fetches many configs in a row."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass
