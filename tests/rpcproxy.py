"""A model of a hosted, metered JSON-RPC endpoint in front of anvil: a real HTTP proxy (threads of
the calling process) that adds a round-trip delay, enforces a calls/s limit that counts every call
inside a batch (as hosted plans do) and counts what it saw by method and by process role.

Each client gets its own URL, `proxy.url_for("client")` = `http://127.0.0.1:P/client`: the path
names the role (a hosted endpoint's per-key URL, in effect). Past the limit a request is answered
HTTP 429 with `Retry-After` (`mode="429"`), or each call over the limit gets JSON-RPC error -32005
"limit exceeded" while the others are served (`mode="32005"`). `throttle(s)` answers every request
429 for `s` seconds (a long rate-limit episode); `outage(s)` drops every connection (a real outage).
Only ever talks to 127.0.0.1.
"""

from __future__ import annotations

import http.client
import http.server
import json
import math
import multiprocessing as mp
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ogpu_prefect._loopback import LoopbackServer

LIMIT_EXCEEDED = -32005
TOO_MANY = b'{"jsonrpc":"2.0","id":null,"error":{"code":429,"message":"Too Many Requests"}}'


@dataclass
class Metering:
    """What the proxy saw, by role: calls (each call in a batch counts) and HTTP requests by method,
    and the calls and requests it rejected for the limit."""

    calls: dict[str, Counter[str]] = field(default_factory=dict)
    http: Counter[str] = field(default_factory=Counter)
    rejected_calls: dict[str, Counter[str]] = field(default_factory=dict)
    rejected_http: Counter[str] = field(default_factory=Counter)

    def total_calls(self, role: str | None = None) -> int:
        return sum(sum(c.values()) for r, c in self.calls.items() if role in (None, r))

    def total_rejected(self, role: str | None = None) -> int:
        return sum(sum(c.values()) for r, c in self.rejected_calls.items() if role in (None, r))

    def by_method(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for c in self.calls.values():
            out.update(c)
        return out

    def snapshot(self) -> Metering:
        return Metering(
            {r: Counter(c) for r, c in self.calls.items()},
            Counter(self.http),
            {r: Counter(c) for r, c in self.rejected_calls.items()},
            Counter(self.rejected_http),
        )

    def minus(self, before: Metering) -> Metering:
        """What was counted since `before` (a snapshot)."""
        return Metering(
            {r: c - before.calls.get(r, Counter()) for r, c in self.calls.items()},
            self.http - before.http,
            {r: c - before.rejected_calls.get(r, Counter()) for r, c in self.rejected_calls.items()},
            self.rejected_http - before.rejected_http,
        )


class _Bucket:
    """The endpoint's limit: a token bucket of `limit` calls/s holding at most `burst_s` seconds'
    worth. A request is admitted whole (429 mode) or call by call (-32005 mode)."""

    def __init__(self, limit: float, burst_s: float) -> None:
        self.limit, self.capacity = limit, max(1.0, limit * burst_s)
        self.tokens, self.at = self.capacity, time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.limit)
        self.at = now

    def take_all(self, n: int) -> float:
        """0 when `n` calls are admitted, else the seconds until they could be."""
        self._refill()
        if self.tokens >= n:
            self.tokens -= n
            return 0.0
        return (min(n, self.capacity) - self.tokens) / self.limit

    def take_up_to(self, n: int) -> int:
        self._refill()
        admitted = min(n, int(self.tokens))
        self.tokens -= admitted
        return admitted


class RpcProxy(LoopbackServer):
    def __init__(
        self,
        upstream: str,
        *,
        delay_s: float = 0.0,
        limit: float | None = None,
        mode: str = "429",
        burst_s: float = 1.0,
        retry_after: str | None = None,
    ) -> None:
        assert upstream.startswith("http://127.0.0.1:"), "the RPC proxy only fronts loopback nodes"
        assert mode in ("429", "32005"), mode
        self.upstream = urlsplit(upstream)
        self.delay_s, self.mode = delay_s, mode
        self.retry_after = retry_after  # a fixed Retry-After header value (an HTTP date, say)
        self.metering = Metering()
        self._bucket = _Bucket(limit, burst_s) if limit else None
        self._lock = threading.Lock()
        self._local = threading.local()
        self.down_until = 0.0
        self.throttled_until = 0.0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a hosted endpoint
            disable_nagle_algorithm = True

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                now = time.monotonic()
                if proxy.throttled_until <= now < proxy.down_until:  # a throttle answers first
                    self.close_connection = True
                    self.connection.close()
                    return
                status, headers, reply = proxy._serve(self.path.strip("/") or "default", body)
                self.send_response(status)
                for k, v in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(Handler)

    def url_for(self, role: str) -> str:
        return f"{self.url}/{role}"

    def set_limit(self, limit: float | None, burst_s: float = 1.0) -> None:
        with self._lock:
            self._bucket = _Bucket(limit, burst_s) if limit else None

    def throttle(self, seconds: float) -> None:
        """Every request is answered 429 (Retry-After 1) for `seconds` from now."""
        self.throttled_until = time.monotonic() + seconds

    def outage(self, seconds: float) -> None:
        """Every connection is dropped unanswered for `seconds` from now."""
        self.down_until = time.monotonic() + seconds

    def _serve(self, role: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        try:
            request = json.loads(body)
        except ValueError:
            return 400, {}, b'{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse error"}}'
        calls = request if isinstance(request, list) else [request]
        methods = [str(c.get("method")) for c in calls if isinstance(c, dict)]
        with self._lock:
            m = self.metering
            m.http[role] += 1
            m.calls.setdefault(role, Counter()).update(methods)
            wait = 0.0
            admitted = len(calls)
            if time.monotonic() < self.throttled_until:
                wait = 1.0
            elif self._bucket is not None and self.mode == "429":
                wait = self._bucket.take_all(len(calls))
            elif self._bucket is not None:
                admitted = self._bucket.take_up_to(len(calls))
            if wait:
                m.rejected_http[role] += 1
                m.rejected_calls.setdefault(role, Counter()).update(methods)
            elif admitted < len(calls):
                m.rejected_http[role] += admitted == 0
                m.rejected_calls.setdefault(role, Counter()).update(methods[admitted:])
        time.sleep(self.delay_s)  # the round trip (rejections travel too)
        if wait:
            after = self.retry_after or str(max(1, math.ceil(wait)))
            return 429, {"Retry-After": after}, TOO_MANY
        forwarded = calls[:admitted]
        replies: list[Any] = []
        if forwarded:
            answer = json.loads(self._forward(json.dumps(forwarded if isinstance(request, list) else forwarded[0])))
            replies = answer if isinstance(answer, list) else [answer]
        replies += [
            {"jsonrpc": "2.0", "id": c.get("id"), "error": {"code": LIMIT_EXCEEDED, "message": "limit exceeded"}}
            for c in calls[admitted:]
        ]
        out = replies if isinstance(request, list) else replies[0]
        return 200, {}, json.dumps(out).encode()

    def _forward(self, body: str) -> bytes:
        """To anvil over a kept-alive connection of this handler thread's own."""
        for attempt in (0, 1):
            conn = getattr(self._local, "conn", None)
            if conn is None:
                conn = self._local.conn = http.client.HTTPConnection(
                    self.upstream.hostname, self.upstream.port, timeout=60
                )
            try:
                conn.request("POST", "/", body, {"Content-Type": "application/json"})
                return conn.getresponse().read()
            except (OSError, http.client.HTTPException):
                conn.close()
                self._local.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")


class ProxyProcess:
    """An RpcProxy in a process of its own (forked), so that its threads do not share a GIL with
    the process it meters (a bench's client). `metering()` and `set_limit()` go over a pipe."""

    def __init__(self, upstream: str, **options: Any) -> None:
        self._conn, theirs = mp.get_context("fork").Pipe()
        self._proc = mp.get_context("fork").Process(target=_proxy_child, args=(upstream, options, theirs), daemon=True)
        self._proc.start()
        theirs.close()
        self.url = str(self._conn.recv())

    def url_for(self, role: str) -> str:
        return f"{self.url}/{role}"

    def _ask(self, *command: Any) -> Any:
        self._conn.send(command)
        return self._conn.recv()

    def metering(self) -> Metering:
        return self._ask("metering")  # type: ignore[no-any-return]

    def set_limit(self, limit: float | None) -> None:
        self._ask("limit", limit)

    def stop(self) -> None:
        if self._proc.is_alive():
            self._ask("stop")
        self._proc.join(timeout=10)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()

    def __enter__(self) -> ProxyProcess:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _proxy_child(upstream: str, options: dict[str, Any], conn: Any) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us
    with RpcProxy(upstream, **options) as proxy:
        conn.send(proxy.url)
        while True:
            try:
                command = conn.recv()
            except EOFError:
                return
            if command[0] == "metering":
                with proxy._lock:
                    conn.send(proxy.metering.snapshot())
            elif command[0] == "limit":
                proxy.set_limit(command[1])
                conn.send(None)
            else:
                conn.send(None)
                return
