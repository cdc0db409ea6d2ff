"""A model of a metered Prefect API (Prefect Cloud's rate limits) in front of a real Prefect server:
a real HTTP and websocket proxy (uvicorn in a thread of the calling process) that counts every
request by route and every log line and event by what carried it, and enforces two per-minute
limits as Prefect Cloud does: `requests_per_min` on the API's routes and `writes_per_min` on log
lines + events (each line of a `POST /logs/`, each event of a `POST /events`, each message of the
`/events/in` websocket). Past a limit an HTTP request is answered 429 with `Retry-After` (the
seconds until the window has room); a websocket message is held until it has room (a socket
cannot be answered 429). `refuse_next(n)` answers the next n requests 429 whatever the counts.
Only ever talks to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
WRITE_ROUTES = ("/logs/", "/events")


@dataclass
class Metering:
    requests: Counter[str] = field(default_factory=Counter)  # "POST /flow_runs/{id}/set_state" -> n
    writes: Counter[str] = field(default_factory=Counter)  # "log" / "event" / "ws-event" -> n
    refused: Counter[str] = field(default_factory=Counter)  # requests answered 429, by route
    held_s: float = 0.0  # seconds websocket messages were held for the write limit
    retry_gaps: list[float] = field(default_factory=list)  # seconds from a 429 to the next request

    def total_requests(self) -> int:
        return sum(self.requests.values())

    def total_writes(self) -> int:
        return sum(self.writes.values())


class _Window:
    """Counts in the last 60 s; `room(n)`: 0 if n more fit, else seconds until they would."""

    def __init__(self, limit: int | None) -> None:
        self.limit, self.stamps = limit, deque[float]()

    def room(self, n: int = 1) -> float:
        if self.limit is None:
            return 0.0
        now = time.monotonic()
        while self.stamps and now - self.stamps[0] >= 60:
            self.stamps.popleft()
        if len(self.stamps) + n <= self.limit:
            return 0.0
        k = max(len(self.stamps) + n - self.limit - 1, 0)
        return 60 - (now - self.stamps[min(k, len(self.stamps) - 1)]) if self.stamps else 60.0

    def take(self, n: int = 1) -> None:
        now = time.monotonic()
        self.stamps.extend([now] * n)


def route_of(method: str, path: str) -> str:
    return f"{method} {UUID_RE.sub('{id}', path.split('?')[0])}"


class PrefectProxy:
    """`with PrefectProxy(upstream_api_url, ...) as proxy:` then point PREFECT_API_URL at `proxy.url`."""

    def __init__(
        self, upstream: str, *, requests_per_min: int | None = None, writes_per_min: int | None = None
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.metering = Metering()
        self._requests = _Window(requests_per_min)
        self._writes = _Window(writes_per_min)
        self._refuse = 0
        self._last_429: float | None = None
        self._lock = threading.Lock()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        prefix = "/" + self.upstream.split("://", 1)[1].partition("/")[2]  # e.g. /api
        self.url = f"http://127.0.0.1:{self.port}{prefix.rstrip('/')}"
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.trace: list[tuple[float, float, str, int]] | None = None
        """When a list: (start, seconds, route, status) of each HTTP request (time.monotonic)."""

    def limit(self, requests_per_min: int | None, writes_per_min: int | None) -> None:
        """New limits, with fresh windows."""
        with self._lock:
            self._requests, self._writes = _Window(requests_per_min), _Window(writes_per_min)

    def refuse_next(self, n: int) -> None:
        with self._lock:
            self._refuse = n

    def reset(self) -> Metering:
        with self._lock:
            before, self.metering = self.metering, Metering()
        return before

    # ---- the app ----

    def _app(self) -> Any:
        import httpx
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import Response
        from starlette.routing import Route, WebSocketRoute
        from starlette.websockets import WebSocket

        base = self.upstream.split("://", 1)[1].partition("/")[0]
        client = httpx.AsyncClient(base_url=f"http://{base}", timeout=120)

        async def http(request: Request) -> Response:
            started = time.monotonic()
            reply = await forward(request)
            if self.trace is not None:
                self.trace.append(
                    (started, time.monotonic() - started, route_of(request.method, request.url.path), reply.status_code)
                )
            return reply

        async def forward(request: Request) -> Response:
            body = await request.body()
            path = request.url.path
            route = route_of(request.method, path)
            writes = _writes_in(path, request.method, body)
            with self._lock:
                if self._last_429 is not None:
                    self.metering.retry_gaps.append(time.monotonic() - self._last_429)
                    self._last_429 = None
                self.metering.requests[route] += 1
                wait = 0.0
                if self._refuse > 0:
                    self._refuse -= 1
                    wait = 1.0
                elif writes:
                    wait = self._writes.room(sum(writes.values()))
                else:
                    wait = self._requests.room()
                if wait > 0:
                    self.metering.refused[route] += 1
                    self._last_429 = time.monotonic()
                    return Response(b'{"detail":"Too many requests"}', 429, {"Retry-After": f"{max(wait, 0.5):.1f}"})
                if writes:
                    self._writes.take(sum(writes.values()))
                    self.metering.writes.update(writes)
                else:
                    self._requests.take()
            headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
            reply = await client.request(
                request.method, path, params=request.url.query or None, content=body, headers=headers
            )
            drop = ("content-encoding", "content-length", "transfer-encoding", "connection")
            return Response(
                reply.content, reply.status_code, {k: v for k, v in reply.headers.items() if k.lower() not in drop}
            )

        async def ws(websocket: WebSocket) -> None:
            import websockets

            path = websocket.url.path
            protocols = websocket.headers.get("sec-websocket-protocol")
            subprotocols = [p.strip() for p in protocols.split(",")] if protocols else None
            async with websockets.connect(f"ws://{base}{path}", subprotocols=subprotocols) as upstream:
                await websocket.accept(subprotocol=upstream.subprotocol)
                inbound = path.endswith("/events/in")

                async def up() -> None:
                    while True:
                        message = await websocket.receive()
                        if message["type"] == "websocket.disconnect":
                            await upstream.close()
                            return
                        text = message.get("text")
                        if inbound and text and '"type"' not in text[:20]:  # an event, not the auth message
                            while (wait := self._writes.room()) > 0:
                                self.metering.held_s += min(wait, 1.0)
                                await asyncio.sleep(min(wait, 1.0))
                            with self._lock:
                                self._writes.take()
                                self.metering.writes["ws-event"] += 1
                        await upstream.send(text if text is not None else message.get("bytes") or b"")

                async def down() -> None:
                    try:
                        async for message in upstream:
                            if isinstance(message, str):
                                await websocket.send_text(message)
                            else:
                                await websocket.send_bytes(message)
                    except websockets.ConnectionClosed:  # the server closed it: so does the proxy
                        pass

                tasks = [asyncio.create_task(up()), asyncio.create_task(down())]
                _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for t in pending:
                    t.cancel()
                try:
                    await websocket.close()
                except Exception:  # noqa: BLE001 - already closed
                    pass

        return Starlette(
            routes=[
                WebSocketRoute("/{path:path}", ws),
                Route("/{path:path}", http, methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]),
            ]
        )

    def __enter__(self) -> PrefectProxy:
        import uvicorn

        config = uvicorn.Config(self._app(), host="127.0.0.1", port=self.port, log_level="warning", ws="websockets")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="prefect-proxy", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)


def _writes_in(path: str, method: str, body: bytes) -> Counter[str]:
    """Log lines and events a request carries (Prefect Cloud's second limit counts them)."""
    out: Counter[str] = Counter()
    if method != "POST" or not any(path.endswith(r) or path.endswith(r.rstrip("/")) for r in WRITE_ROUTES):
        return out
    try:
        docs = json.loads(body or b"[]")
    except ValueError:
        return out
    n = len(docs) if isinstance(docs, list) else 1
    out["log" if "/logs" in path else "event"] += n
    return out
