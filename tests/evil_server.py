"""A loopback JSON server a hostile provider points its responses at (a stand-in for a service
on the client's private network): it counts every request it gets."""

from __future__ import annotations

import http.server
from typing import Any

from ogpu_prefect._loopback import LoopbackServer


class EvilServer(LoopbackServer):
    def __init__(self) -> None:
        self.hits = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                server.hits += 1
                body = b'{"result": "the private network answered"}'
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(Handler)
