"""Writes to a Prefect API that never lose a document and never hold up their caller.

`put` appends the document to a spool file on disk (`PREFECT_HOME/ogpu-spool/<API>/`) and returns:
the money path never waits on the Prefect API. A thread of the writer sends the spool in batches
(one request per batch: `POST /events` takes a list of events, `POST /logs/` a list of log lines)
and moves the spool's committed offset past a batch only once the server accepted it. A 429 is
waited out for its `Retry-After` (Prefect's client retries it first, honouring the same header),
any other failure is retried after a pause; nothing is dropped. A process that dies leaves its
spool behind; the next writer for the same API and route (the restarted worker, or any process
of this machine's Prefect home) adopts and sends it. A resent batch is harmless for events (the
server deduplicates them by id) and task-run states (recorded by id and time).

The spool is bounded (`max_bytes`): past it a document is refused and counted (`dropped`), with a
warning; at the default size that is hours of a Prefect API that refuses everything.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from .prefect_api import in_caller_context

log = logging.getLogger(__name__)

MAX_BYTES = 256 * 2**20
BATCH = 200  # documents per request
ORPHAN_MAX_AGE_S = 7 * 86400  # a spool nobody adopted for this long belongs to an API that is gone


class Spool:
    """Append-only JSON lines and the offset sent so far, held by one process (an flock)."""

    def __init__(self, path: Path, *, adopt: bool = False) -> None:
        self.path = path
        self.offset_path = path.with_suffix(".offset")
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(path.with_suffix(".lock"), "a+")  # noqa: SIM115 - held for the spool's life
        fcntl.flock(self._lock_file, fcntl.LOCK_EX | (fcntl.LOCK_NB if adopt else 0))
        self._file = open(path, "ab")  # noqa: SIM115
        self.size = path.stat().st_size
        self.offset = int(self.offset_path.read_text() or 0) if self.offset_path.exists() else 0

    def append(self, lines: bytes) -> None:
        self._file.write(lines)
        self._file.flush()  # in the kernel: survives this process dying
        self.size += len(lines)

    def read(self, n: int) -> tuple[list[Any], int]:
        """Up to `n` documents after the committed offset, and the offset past them."""
        docs: list[Any] = []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            end = self.offset
            for line in f:
                if not line.endswith(b"\n"):  # a line being written
                    break
                end += len(line)
                docs.append(json.loads(line))
                if len(docs) >= n:
                    break
        return docs, end

    def commit(self, end: int) -> None:
        self.offset = end
        if self.offset >= self.size:  # all sent: start over (keeps the file small)
            self._file.truncate(0)
            self._file.seek(0)
            self.size = self.offset = 0
        tmp = self.offset_path.with_suffix(".tmp")
        tmp.write_text(str(self.offset))
        tmp.replace(self.offset_path)

    def pending(self) -> int:
        return self.size - self.offset

    def remove(self) -> None:
        for p in (self.path, self.offset_path, self.path.with_suffix(".lock")):
            p.unlink(missing_ok=True)
        self._file.close()
        self._lock_file.close()


def spool_dir(api_url: str) -> Path:
    from prefect.settings import PREFECT_HOME

    return Path(PREFECT_HOME.value()) / "ogpu-spool" / hashlib.sha256(api_url.encode()).hexdigest()[:16]


class ApiWriter:
    """Sends documents to `route` of the caller's Prefect API (see module doc). `post`: sends one
    batch, raising on failure (default: Prefect's client)."""

    def __init__(
        self,
        route: str,
        *,
        directory: Path | None = None,
        max_bytes: int = MAX_BYTES,
        batch: int = BATCH,
        post: Any = None,
    ) -> None:
        from prefect.settings import PREFECT_API_URL

        self.route, self.batch, self.max_bytes = route, batch, max_bytes
        self.directory = directory or spool_dir(str(PREFECT_API_URL.value() or ""))
        name = route.strip("/").replace("/", "-") or "root"
        self.spool = Spool(self.directory / f"{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl")
        self._orphans = [p for p in self.directory.glob(f"{name}-*.jsonl") if p != self.spool.path]
        self._post = post
        self._lock = threading.Lock()
        self.sent = self.dropped = self.limited = self.requests = 0
        self.put_count = self.sent_own = 0  # this process' documents: put, and accepted
        self._wake = threading.Event()
        self._thread = threading.Thread(target=in_caller_context(self._run), name=f"ogpu-{name}", daemon=True)
        self._thread.start()

    def put(self, doc: Any) -> None:
        """Queues `doc` (JSON-serialisable) on disk; never waits for the API."""
        line = (json.dumps(doc, separators=(",", ":"), default=str) + "\n").encode()
        with self._lock:
            if self.spool.pending() + len(line) > self.max_bytes:
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 1000 == 0:
                    log.warning("the Prefect API took nothing for %s; %d document(s) refused", self.route, self.dropped)
                return
            self.spool.append(line)
            self.put_count += 1
        self._wake.set()

    @property
    def unsent(self) -> int:
        """This process' documents not yet accepted by the server."""
        return self.put_count - self.sent_own - self.dropped

    def _pending_bytes(self) -> int:
        with self._lock:
            return self.spool.pending()

    def flush(self, timeout: float = 30.0) -> bool:
        """Waits until everything put was accepted (or `timeout`); True if it was."""
        deadline = time.monotonic() + timeout
        self._wake.set()
        while (self._pending_bytes() or self._orphans) and time.monotonic() < deadline:
            time.sleep(0.02)
        return not (self._pending_bytes() or self._orphans)

    # ---- the sending thread ----

    def _run(self) -> None:
        client = None
        while True:
            try:
                if self._post is None and client is None:
                    from prefect.client.orchestration import get_client

                    client = get_client(sync_client=True)
                    client.__enter__()
                self._adopt(client)
                if not self._send_some(self.spool, client, self._lock):
                    self._wake.wait(0.25)  # a burst accumulates into one request
                    self._wake.clear()
            except Exception as e:  # a failure not of the API's answer (a bug, a closed client): retry
                log.debug("%s writer: %s", self.route, e)
                time.sleep(1.0)

    def _adopt(self, client: Any) -> None:
        """Sends what dead processes' writers left for this API and route, then removes it."""
        while self._orphans:
            path = self._orphans[0]
            try:
                if time.time() - path.stat().st_mtime > ORPHAN_MAX_AGE_S:
                    raise FileNotFoundError(path)
                spool = Spool(path, adopt=True)
            except (BlockingIOError, FileNotFoundError):  # alive (held by its process), or gone
                self._orphans.pop(0)
                continue
            while spool.pending():
                self._send_some(spool, client, threading.Lock())
            spool.remove()
            self._orphans.pop(0)

    def _send_some(self, spool: Spool, client: Any, lock: threading.Lock) -> bool:
        """Sends one batch of `spool`; True if there was one (sent, or waited for)."""
        with lock:
            docs, end = spool.read(self.batch)
        if not docs:
            return False
        pause = self._send(docs, client)
        if pause is None:
            with lock:
                spool.commit(end)
            self.sent += len(docs)
            if spool is self.spool:
                self.sent_own += len(docs)
        else:
            time.sleep(pause)
        return True

    def _send(self, docs: list[Any], client: Any) -> float | None:
        """None when the server accepted `docs`; else seconds to wait before trying again."""
        import httpx

        self.requests += 1
        try:
            if self._post is not None:
                self._post(self.route, docs)
            else:
                client.request("POST", self.route, json=docs)
            return None
        except httpx.HTTPStatusError as e:
            status = e.response.status_code
            if status == 429:
                self.limited += 1
                return retry_after(e.response.headers.get("Retry-After"))
            if status == 422 and len(docs) > 1:  # one bad document: find it, send the rest
                return 0.0 if self._send_each(docs, client) else 1.0
            if status == 422:
                log.error("the Prefect API refused a document for %s: %s", self.route, e.response.text[:300])
                self.dropped += 1
                return None
            log.warning("%s: the Prefect API answered %d; retrying", self.route, status)
            return 2.0
        except Exception as e:  # unreachable, timed out: the same batch again
            log.warning("%s: the Prefect API is not reachable (%s); retrying", self.route, e)
            return 2.0

    def _send_each(self, docs: list[Any], client: Any) -> bool:
        return all(self._send([d], client) is None for d in docs)


def retry_after(value: str | None, default: float = 1.0) -> float:
    """A `Retry-After` header's seconds (a number; an HTTP date is not used by Prefect Cloud)."""
    try:
        return min(max(float(value), 0.0), 300.0) if value else default
    except ValueError:
        return default


_writers: dict[tuple[str, str], ApiWriter] = {}
_writers_lock = threading.Lock()


def writer(route: str) -> ApiWriter:
    """The process' writer to `route` of the caller's Prefect API (one per API and route, as
    Prefect's own log and event workers)."""
    from prefect.settings import PREFECT_API_URL

    key = (str(PREFECT_API_URL.value() or ""), route)
    with _writers_lock:
        found = _writers.get(key)
        if found is None:
            import atexit

            found = _writers[key] = ApiWriter(route)
            atexit.register(found.flush, 10.0)  # what is not sent by then stays spooled for the next process
        return found
