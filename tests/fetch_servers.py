"""Real HTTP servers on loopback, in threads, that a hostile client's config URL (or a hostile
provider's response URL) points a reader at: each records every path it was asked for.

- `SecretServer`: answers any GET with `{"db_password": "hunter2"}` (an internal service).
- `TrickleServer`: answers 200 and then a body of one byte every `every_s` seconds, for at most
  `for_s` seconds (so a reader without a total deadline is held that long, not forever); with
  `headers_too`, the status line and headers trickle as well.
- `RedirectServer`: answers every GET with a 302 to `target`.
"""

from __future__ import annotations

import http.server
import time
from typing import Any

from ogpu_prefect._loopback import LoopbackServer

SECRET = b'{"db_password": "hunter2"}'


class _Recording(LoopbackServer):
    def __init__(self, reply: Any) -> None:
        self.paths: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                server.paths.append(self.path)
                try:
                    reply(self)
                except OSError:  # the reader hung up
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(Handler)

    @property
    def hits(self) -> int:
        return len(self.paths)


class SecretServer(_Recording):
    def __init__(self) -> None:
        def reply(h: http.server.BaseHTTPRequestHandler) -> None:
            h.send_response(200)
            h.send_header("Content-Length", str(len(SECRET)))
            h.end_headers()
            h.wfile.write(SECRET)

        super().__init__(reply)


class TrickleServer(_Recording):
    def __init__(self, every_s: float = 0.5, for_s: float = 8.0, *, headers_too: bool = False) -> None:
        def reply(h: http.server.BaseHTTPRequestHandler) -> None:
            end = time.monotonic() + for_s
            h.wfile.write(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n")
            if headers_too:
                for i in range(10_000):
                    if time.monotonic() > end:
                        return
                    h.wfile.write(b"X-Pad-%d: x\r\n" % i)
                    h.wfile.flush()
                    time.sleep(every_s)
            h.wfile.write(b"\r\n[")
            h.wfile.flush()
            while time.monotonic() < end:
                time.sleep(every_s)
                h.wfile.write(b"1")
                h.wfile.flush()

        super().__init__(reply)


class RedirectServer(_Recording):
    def __init__(self, target: str) -> None:
        def reply(h: http.server.BaseHTTPRequestHandler) -> None:
            h.send_response(302)
            h.send_header("Location", target)
            h.send_header("Content-Length", "0")
            h.end_headers()

        super().__init__(reply)
