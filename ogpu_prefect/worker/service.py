"""The `ogpu.service` protocol (PROTOCOL.md section 7), from the provider's side.

A source's service answers `POST /run/{function}/{task_address}` with 202 and later POSTs the
handler's output to `CALLBACK_URL/{task_address}`; errors and timeouts send nothing, so the
provider enforces its own deadline. `CallbackReceiver` is the provider's loopback server for those
callbacks; `ServiceClient` submits work and waits for its result.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from typing import Any

import requests

from .._loopback import LoopbackServer
from ..chain.rpc import http_session


class ServiceError(Exception):
    """The service refused the input, was unreachable, or sent no result before the deadline."""


class CallbackReceiver(LoopbackServer):
    """Receives `POST /<task_address>` callbacks (any JSON body) and hands them to waiters. Only
    expected tasks' callbacks are kept (`expect` before sending the work): one that comes after
    its waiter gave up is dropped, not held forever or handed to a later task at that address."""

    def __init__(self, port: int = 0) -> None:
        self._results: dict[str, Any] = {}
        self._expected: set[str] = set()
        self._cond = threading.Condition()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                task = self.path.strip("/").split("/")[-1].lower()
                try:
                    body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"null")
                except ValueError:
                    self.send_response(400)
                    self.end_headers()
                    return
                with receiver._cond:
                    if task in receiver._expected:
                        receiver._results[task] = body
                        receiver._cond.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(Handler, port)

    def expect(self, task_address: str) -> None:
        """Call before sending `task_address`'s work: its callback is kept from now until its
        `wait` ends. A result left from an earlier execution is dropped; a cancel is kept."""
        key = task_address.lower()
        with self._cond:
            self._expected.add(key)
            if not isinstance(self._results.get(key), _Cancelled):
                self._results.pop(key, None)

    def forget(self, task_address: str) -> None:
        """Stops expecting `task_address` (its work could not be sent)."""
        key = task_address.lower()
        with self._cond:
            self._expected.discard(key)
            self._results.pop(key, None)

    def wait(self, task_address: str, deadline: float) -> Any:
        """The callback body for `task_address` (expected: see `expect`), or ServiceError at the
        wall-clock `deadline` or once `cancel(task_address)` is called."""
        key = task_address.lower()
        with self._cond:
            self._expected.add(key)
            try:
                while key not in self._results:
                    left = deadline - time.time()
                    if left <= 0:
                        raise ServiceError(f"no result for {task_address} before the deadline")
                    self._cond.wait(timeout=min(left, 1.0))
                result = self._results.pop(key)
            finally:
                self._expected.discard(key)
        if isinstance(result, _Cancelled):
            raise result.error or ServiceError(f"{task_address} was cancelled")
        return result

    def cancel(self, task_address: str, error: Exception | None = None, *, if_expected: bool = False) -> bool:
        """Wakes the waiter of `task_address` with `error` (default: a ServiceError). With no
        waiter yet, the next wait raises at once; with `if_expected`, that happens only for a task
        whose work was sent and not yet answered. True if it took effect."""
        key = task_address.lower()
        with self._cond:
            if if_expected and key not in self._expected:
                return False
            self._results[key] = _Cancelled(error)
            self._cond.notify_all()
        return True


class _Cancelled:
    def __init__(self, error: Exception | None) -> None:
        self.error = error


class ServiceClient:
    """Talks to one running service at `base_url` (e.g. http://127.0.0.1:41234)."""

    def __init__(self, base_url: str, *, timeout: float = 10.0, session: requests.Session | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._session = session or http_session()

    def submit(self, function_name: str, task_address: str, data: Any) -> None:
        """Sends the task's input (the handler's input model, unwrapped); expects 202."""
        url = f"{self.base_url}/run/{function_name}/{task_address}"
        for attempt in (1, 2):
            try:
                resp = self._session.post(url, json=data, timeout=self.timeout)
                break
            except requests.ConnectionError as e:
                # A kept-alive connection the service closed as we reused it (uvicorn drops idle
                # ones after 5 s) is reset before an answer: once, on a new connection.
                if attempt == 2 or "Connection aborted" not in str(e):
                    raise ServiceError(f"service at {self.base_url} unreachable: {e}") from None
            except requests.RequestException as e:
                raise ServiceError(f"service at {self.base_url} unreachable: {e}") from None
        if resp.status_code != 202:
            raise ServiceError(f"{url} answered HTTP {resp.status_code}: {resp.text[:500]}")

    def ready(self) -> bool:
        """Whether the service answers HTTP at all (ogpu.service has no health route: any reply counts)."""
        try:
            self._session.get(f"{self.base_url}/openapi.json", timeout=1)
            return True
        except requests.RequestException:
            return False
