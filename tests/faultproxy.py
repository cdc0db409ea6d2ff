"""A loopback HTTP proxy in front of anvil that misbehaves on purpose: it drops a share of
requests before forwarding them, drops a share of replies *after* the node has executed the
request (the case that tempts a client into sending a transaction twice), and delays some.
Seeded, bounded, and only ever talks to 127.0.0.1."""

from __future__ import annotations

import http.server
import random
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ogpu_prefect._loopback import LoopbackServer


@dataclass
class Faults:
    drop_request: float = 0.1
    drop_reply: float = 0.1
    delay: float = 0.1
    max_delay_s: float = 0.05
    seed: int = 7
    counts: dict[str, int] = field(
        default_factory=lambda: {"forwarded": 0, "dropped_request": 0, "dropped_reply": 0, "delayed": 0}
    )


class FaultProxy(LoopbackServer):
    def __init__(self, upstream: str, faults: Faults) -> None:
        assert upstream.startswith("http://127.0.0.1:"), "the fault proxy only fronts loopback nodes"
        self.upstream = upstream
        self.faults = faults
        self._rng = random.Random(faults.seed)
        self._lock = threading.Lock()
        self.down_until = 0.0  # an outage: every request is dropped until then
        self.triggers: list[tuple[Callable[[bytes], bool], float]] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                proxy._fire(body)
                if time.monotonic() < proxy.down_until:
                    proxy.faults.counts["outage"] = proxy.faults.counts.get("outage", 0) + 1
                    self.close_connection = True
                    self.connection.close()
                    return
                fate = proxy._fate()
                if fate == "dropped_request":
                    self.close_connection = True
                    self.connection.close()
                    return
                if fate == "delayed":
                    time.sleep(proxy._rng.uniform(0, proxy.faults.max_delay_s))
                req = urllib.request.Request(proxy.upstream, body, {"Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=30) as resp:
                    reply = resp.read()
                if fate == "dropped_reply":
                    self.close_connection = True
                    self.connection.close()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(Handler)

    def outage(self, seconds: float) -> None:
        """The node is unreachable for `seconds` from now (every connection dropped unanswered)."""
        self.down_until = time.monotonic() + seconds

    def outage_when(self, matches: Callable[[bytes], bool], seconds: float) -> None:
        """An outage of `seconds` starts with the first request whose body `matches` (that request
        is dropped too): an outage at a chosen step of a batch, e.g. its first broadcast."""
        with self._lock:
            self.triggers.append((matches, seconds))

    def _fire(self, body: bytes) -> None:
        with self._lock:
            for trigger in list(self.triggers):
                if trigger[0](body):
                    self.triggers.remove(trigger)
                    self.down_until = time.monotonic() + trigger[1]
                    self.faults.counts["outages"] = self.faults.counts.get("outages", 0) + 1

    def _fate(self) -> str:
        with self._lock:
            r = self._rng.random()
            f = self.faults
            if r < f.drop_request:
                fate = "dropped_request"
            elif r < f.drop_request + f.drop_reply:
                fate = "dropped_reply"
            elif r < f.drop_request + f.drop_reply + f.delay:
                fate = "delayed"
            else:
                fate = "forwarded"
            f.counts[fate] += 1
            return fate
