"""Where task configs, source metadata and responses live. The chain stores only URLs; the JSON
behind them is written content-addressed (its sha256 in the name), so writing the same payload
twice is a no-op and returns the same URL.

- `FsspecStore`: any fsspec URL to write to (file://, memory://, s3://, ...), and optionally the
  public URL prefix under which the same names can be read (an http(s) server, a bucket's site).
- `IpfsStore`: the real network's IPFS upload API (a multipart POST answering `{"link": ...}`).
- `fetch_json` (fetching.py, re-exported here): reads any of those back, confined to the reader's
  allowed origins.
- `serve_directory`: a loopback HTTP server over a folder: the devnet's default store.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import requests

from ._loopback import DirectoryServer
from .chain.errors import InvalidInputError
from .chain.pacing import RetryPolicy
from .fetching import MAX_PAYLOAD_BYTES, StorageError
from .fetching import UntrustedUrlError as UntrustedUrlError  # re-exported: one implementation, in fetching.py
from .fetching import fetch_json as fetch_json
from .fetching import is_trusted as is_trusted
from .validation import check_int, check_number, check_url, refuse_secret

log = logging.getLogger(__name__)

IPFS_API_URL = "https://capi.ogpuscan.io/file/create"
IPFS_GATEWAY = "https://cipfs.ogpuscan.io/ipfs/"
"""Where the real network's IPFS upload API links its files (PROTOCOL.md section 6)."""


def canonical_json(obj: Any, *, field: str = "data") -> bytes:
    """Deterministic JSON bytes; typed errors name `field` for what is not JSON or too big."""
    try:
        body = json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as e:
        raise InvalidInputError(field, f"not JSON-serialisable ({e})") from None
    if len(body) > MAX_PAYLOAD_BYTES:
        raise InvalidInputError(field, f"payload is {len(body):,} bytes, over the {MAX_PAYLOAD_BYTES:,}-byte limit")
    return body


def check_write_url(field: str, value: Any) -> str:
    """An fsspec URL (or local path) to write under: a protocol fsspec knows; a key refused unechoed."""
    import fsspec

    refuse_secret(field, value)
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError(field, f"expected an fsspec URL or a path, not {type(value).__name__} {value!r:.80}")
    if "://" in value:
        known = fsspec.available_protocols()
        for protocol in value.split("://", 1)[0].split("::"):
            if protocol not in known:
                raise InvalidInputError(field, f"unknown fsspec protocol {protocol!r:.40}")
    return value


def content_name(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest() + ".json"


class PayloadStore(Protocol):
    """What the client writes payloads through. `put_body` stores canonical JSON bytes (from
    `canonical_json`) and returns the URL to put on chain; `put_json` is canonical_json + put_body."""

    def put_json(self, obj: Any, *, field: str = "data") -> str: ...

    def put_body(self, body: bytes) -> str: ...


def put_many(store: PayloadStore, bodies: list[bytes]) -> list[str]:
    """Stores many bodies: in parallel where the store talks to a network, in order otherwise."""
    if len(bodies) <= 4 or not getattr(store, "parallel", True):
        return [store.put_body(b) for b in bodies]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(store.put_body, bodies))


@dataclass
class FsspecStore:
    """Writes under `write_url` with fsspec; URLs handed out are `read_url/<sha256>.json`
    (`read_url` defaults to `write_url`)."""

    write_url: str
    read_url: str | None = None
    storage_options: dict[str, Any] = field(default_factory=dict, repr=False)  # credentials

    def __post_init__(self) -> None:
        import fsspec

        check_write_url("write_url", self.write_url)
        if self.read_url is not None:
            check_url("read_url", self.read_url)
        if not isinstance(self.storage_options, dict):
            raise InvalidInputError("storage_options", f"a dict, not {type(self.storage_options).__name__}")
        self._fs, self._root = fsspec.core.url_to_fs(self.write_url, **self.storage_options)
        self._root = self._root.rstrip("/")
        self._fs.makedirs(self._root, exist_ok=True)
        protocols = (self._fs.protocol,) if isinstance(self._fs.protocol, str) else tuple(self._fs.protocol)
        self._local = "file" in protocols
        self.parallel = not self._local and "memory" not in protocols

    def put_json(self, obj: Any, *, field: str = "data") -> str:
        return self.put_body(canonical_json(obj, field=field))

    def put_body(self, body: bytes) -> str:
        name = content_name(body)
        path = f"{self._root}/{name}"
        if self._local:  # plain files: one exclusive create instead of fsspec's stat + open + write
            try:
                with open(path, "xb") as f:
                    f.write(body)
            except FileExistsError:
                pass
        else:
            try:
                if not self._fs.exists(path):
                    self._fs.pipe_file(path, body)
            except OSError as e:  # aiohttp's connection errors are OSErrors: named, before any wei moves
                raise InvalidInputError("write_url", f"cannot write to {self.write_url}: {type(e).__name__}") from None
        return f"{(self.read_url or self.write_url).rstrip('/')}/{name}"

    @property
    def trusted_origins(self) -> list[str]:
        """Where payloads written here are read."""
        return [self.read_url or self.write_url]


@dataclass
class IpfsStore:
    """The real network's upload API (PROTOCOL.md section 6). 4xx and a reply without `link` fail at
    once; 5xx, connection errors and timeouts are retried with backoff. A payload already uploaded
    by this store is not uploaded again."""

    api_url: str = IPFS_API_URL
    timeout: float = 30.0
    retries: int = 3
    backoff: float = 0.5
    _links: dict[str, str] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    parallel = True

    @property
    def trusted_origins(self) -> list[str]:
        """Where the API's links point: the network's gateway."""
        return [IPFS_GATEWAY]

    def __post_init__(self) -> None:
        check_url("api_url", self.api_url, ("http", "https"))
        check_number("timeout", self.timeout, exclusive_minimum=0)
        check_int("retries", self.retries, minimum=1)
        check_number("backoff", self.backoff, minimum=0)

    def put_json(self, obj: Any, *, field: str = "data") -> str:
        return self.put_body(canonical_json(obj, field=field))

    def put_body(self, body: bytes) -> str:
        name = content_name(body)
        with self._lock:
            if name in self._links:
                return self._links[name]
        retry = RetryPolicy(
            outage_s=math.inf, backoff=self.backoff, max_backoff=math.inf, max_tries=self.retries
        ).start()
        while True:
            try:
                resp = requests.post(
                    self.api_url, files={"file": (name, body, "application/json")}, timeout=self.timeout
                )
            except (requests.ConnectionError, requests.Timeout) as e:
                err: str = str(e)
            else:
                if resp.status_code in (200, 201):
                    try:
                        link = resp.json()["link"]
                    except (ValueError, KeyError, TypeError):
                        raise StorageError(f"IPFS API {self.api_url} answered without a link") from None
                    with self._lock:
                        self._links[name] = link
                    return str(link)
                if resp.status_code < 500:
                    raise StorageError(f"IPFS API {self.api_url} refused the upload: HTTP {resp.status_code}")
                err = f"HTTP {resp.status_code}"
            delay = retry.failed()
            if delay is None:
                raise StorageError(f"IPFS API {self.api_url} failed after {self.retries} attempts: {err}")
            log.debug("IPFS upload failed (%s), retrying in %.2fs", err, delay)
            time.sleep(delay)


def serve_directory(root: Path, port: int = 0) -> DirectoryServer:
    """A loopback HTTP server over `root`, in a process of its own (not yet started: use it as a
    context manager)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    return DirectoryServer(str(root.resolve()), port)


class LocalStore:
    """The devnet's default: a folder served over loopback HTTP, written through FsspecStore."""

    def __init__(self, root: Path, port: int = 0) -> None:
        self.root = Path(root)
        self.server = serve_directory(self.root, port)
        self._store: FsspecStore | None = None

    def __enter__(self) -> LocalStore:
        self.server.start()
        self._store = FsspecStore(f"file://{self.root.resolve()}", self.server.url)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.stop()

    @property
    def base_url(self) -> str:
        return self.server.url

    @property
    def trusted_origins(self) -> list[str]:
        """Where payloads written here are read (the loopback server)."""
        return [self.server.url]

    parallel = False

    def put_json(self, obj: Any, *, field: str = "data") -> str:
        return self.put_body(canonical_json(obj, field=field))

    def put_body(self, body: bytes) -> str:
        assert self._store is not None, "LocalStore is used as a context manager"
        return self._store.put_body(body)
