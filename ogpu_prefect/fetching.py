"""Every read the project makes of a URL someone else chose: a provider reading a client's task
config, a client reading a provider's response. Such a URL comes from the chain, so a read is
confined to the reader's `allowed` URL prefixes:

- **Path**: dot segments (also percent-encoded) are resolved, and encoded slashes refused, before
  the prefix check; the request asks for the resolved path. No user info.
- **Origin**: same scheme, host (as written) and port as an allowed prefix, the path inside its
  path on a segment boundary; a bare `https://` (or `http://`) prefix allows any host whose
  addresses are all public. `file://` only under an allowed `file://` prefix (a regular file,
  symlinks resolved); other fsspec schemes only under a prefix of theirs.
- **Address**: the host is resolved once and the connection goes to that checked address (no DNS
  rebinding between check and connect). A loopback, private, link-local or otherwise non-public
  address is refused unless the allowed prefix names that very address (`http://127.0.0.1:8000/`,
  the devnet's store) or `localhost` (then loopback only), or names a host no public DNS can
  answer for (one label, `storage`, or under `.internal` or `.home.arpa`: the operator's own
  resolver does), which may then resolve to a private address (never loopback or link-local).
- **Redirects**: followed (at most MAX_REDIRECTS) only to URLs that pass the same checks.
- **Limits**: one total deadline for the whole read, headers and body included (a watchdog shuts
  the socket), and a size cap (Content-Length checked first, the body read no further).

`allowed=None` is for the reader's own URLs (its own store): no origin or address check, the
deadline and size cap still hold.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import os
import posixpath
import socket
import ssl
import stat
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urljoin, urlsplit

from .chain.errors import OGPUError

MAX_PAYLOAD_BYTES = 512 * 1024
"""Largest JSON payload (task input, source metadata, response) accepted: 512 KiB. Bigger data
belongs in its own storage, referenced by URL from the payload."""
FETCH_TIMEOUT_S = 10.0
"""Seconds a whole payload read may take: resolving, connecting, headers, body, redirects."""
MAX_REDIRECTS = 3
PATH_SAFE = "/:@!$&'()*+,;=-._~"


class StorageError(OGPUError):
    """A payload could not be written or read."""


class UntrustedUrlError(StorageError):
    """A URL outside the origins the reader allows, or whose host resolves to an address they do
    not allow: not fetched (a URL on chain would otherwise make the reader probe its own network
    or read its own files, and publish what it found)."""


@dataclass(frozen=True)
class _Target:
    url: str  # normalised
    scheme: str
    host: str
    port: int
    path: str  # normalised path + query, as requested


def _normalise(url: str) -> _Target:
    """`url` with its dot segments resolved; UntrustedUrlError for what cannot be made safe."""
    try:
        u = urlsplit(url)
        port = u.port
    except ValueError:
        raise UntrustedUrlError(f"not a valid URL: {url[:200]!r}") from None
    scheme = u.scheme.lower()
    if u.username is not None or u.password is not None:
        raise UntrustedUrlError(f"{url[:200]}: user info in a URL is refused")
    raw = u.path or "/"
    if "\\" in raw or any(e in raw.lower() for e in ("%2f", "%5c", "%00")):
        raise UntrustedUrlError(f"{url[:200]}: encoded slashes or NULs in the path are refused")
    decoded = unquote(raw)  # "%2e%2e" is ".." to most servers
    path = "/" + posixpath.normpath("/" + decoded).lstrip("/")  # normpath keeps a leading "//"
    if decoded.endswith("/") and path != "/":
        path += "/"
    path = quote(path, safe=PATH_SAFE)
    default = {"http": 80, "https": 443}.get(scheme, 0)
    host = (u.hostname or "").lower()
    netloc = f"{host}:{port}" if port else host
    if ":" in host:
        netloc = f"[{host}]:{port}" if port else f"[{host}]"
    query = f"?{u.query}" if u.query else ""
    return _Target(f"{scheme}://{netloc}{path}{query}", scheme, host, port or default, path + query)


def matching_origin(url: str, allowed: Iterable[str]) -> str | None:
    """The first of the `allowed` URL prefixes `url` lies under (after normalising), or None."""
    try:
        t = _normalise(url)
    except UntrustedUrlError:
        return None
    for prefix in allowed:
        try:
            a = _normalise(prefix)
        except UntrustedUrlError:
            continue
        if a.scheme != t.scheme:
            continue
        if not a.host and a.scheme in ("http", "https"):  # "https://": any host, public addresses only
            return prefix
        if a.host != t.host or a.port != t.port:
            continue
        base = a.path.split("?", 1)[0].rstrip("/")
        path = t.path.split("?", 1)[0]
        if t.scheme == "file":  # symlinks resolved on both sides
            base, path = (os.path.realpath(unquote(p)) for p in (base or "/", path))
            base = base.rstrip("/")
        if not base or path == base or path.startswith(base + "/"):
            return prefix
    return None


def is_trusted(url: str, allowed: Iterable[str]) -> bool:
    """Whether `url` lies under one of the `allowed` URL prefixes (see the module's rules)."""
    return matching_origin(url, allowed) is not None


def _literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


INTERNAL_SUFFIXES = (".internal", ".home.arpa")
"""Names no public DNS answers for (ICANN's private-use `.internal`; RFC 8375's `.home.arpa`)."""


def is_internal_name(host: str) -> bool:
    """A host name only the operator's own resolver answers for: one label, or under
    INTERNAL_SUFFIXES (not `localhost`, not an address). A client cannot point such a name
    elsewhere, as it can a public name it controls the DNS of."""
    name = host.lower().rstrip(".")
    if not name or name == "localhost" or _literal(name) is not None:
        return False
    return "." not in name or name.endswith(INTERNAL_SUFFIXES)


def _private_unicast(a: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return a.is_private and not (a.is_loopback or a.is_link_local or a.is_unspecified or a.is_multicast)


def checked_address(host: str, port: int, allowed_host: str | None) -> str:
    """`host` resolved to the one address to connect to. Each address it resolves to must be
    public, unless `allowed_host` (the host of the allowed prefix the URL matched) is that very
    address, or `localhost` and the address is loopback, or an internal name (`is_internal_name`)
    and the address is private (not loopback, link-local: a cloud's metadata service). None: the
    caller's own URL, unchecked."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as e:
        raise StorageError(f"cannot resolve {host}: {e}") from None
    addresses = [ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos]
    if not addresses:
        raise StorageError(f"{host} resolves to no address")
    if allowed_host is not None:
        named, internal = _literal(allowed_host), is_internal_name(allowed_host)
        for a in addresses:
            ok = (
                a == named
                or (allowed_host == "localhost" and a.is_loopback)
                or (named is None and allowed_host != "localhost" and a.is_global and not a.is_multicast)
                or (internal and _private_unicast(a))
            )
            if not ok:
                raise UntrustedUrlError(
                    f"{host} resolves to {a}, which is not a public address: refused (allow it by "
                    "naming that address, or an internal name such as storage.internal, in an allowed origin)"
                )
    return str(addresses[0])


def fetch_json(
    url: str,
    *,
    allowed_origins: Iterable[str] | None = None,
    timeout: float = FETCH_TIMEOUT_S,
    max_bytes: int = MAX_PAYLOAD_BYTES,
) -> Any:
    """The JSON at `url`, read under the module's rules: at most `max_bytes`, all within
    `timeout` seconds. With `allowed_origins` (URL prefixes), a URL outside them, or resolving
    to an address they do not name, raises UntrustedUrlError without a request. Raises
    StorageError."""
    body = fetch_bytes(url, allowed_origins=allowed_origins, timeout=timeout, max_bytes=max_bytes)
    try:
        return json.loads(body)
    except ValueError:
        raise StorageError(f"{url[:200]} is not JSON") from None


def fetch_bytes(
    url: str,
    *,
    allowed_origins: Iterable[str] | None = None,
    timeout: float = FETCH_TIMEOUT_S,
    max_bytes: int = MAX_PAYLOAD_BYTES,
) -> bytes:
    """The bytes at `url`, under the same rules as `fetch_json`."""
    if not isinstance(url, str) or not url:
        raise StorageError(f"not a URL: {url!r:.80}")
    allowed = None if allowed_origins is None else list(allowed_origins)
    return _read(url, allowed, time.monotonic() + timeout, timeout, max_bytes)


def _read(url: str, allowed: list[str] | None, deadline: float, timeout: float, max_bytes: int) -> bytes:
    for _ in range(MAX_REDIRECTS + 1):
        origin = None
        if allowed is not None:
            origin = matching_origin(url, allowed)
            if origin is None:
                raise UntrustedUrlError(f"{url[:200]} is not under an allowed origin ({', '.join(allowed) or 'none'})")
        target = _normalise(url) if "://" in url else None
        if target is None or target.scheme not in ("http", "https"):
            return _read_other(url, target, deadline, timeout, max_bytes)
        allowed_host = None if origin is None else _normalise(origin).host
        status, location, body = _http_get(target, allowed_host, deadline, timeout, max_bytes)
        if status in (301, 302, 303, 307, 308) and location:
            url = urljoin(target.url, location)
            continue
        if status != 200:
            raise StorageError(f"GET {target.url[:200]}: HTTP {status}")
        return body
    raise StorageError(f"{url[:200]}: more than {MAX_REDIRECTS} redirects")


def _read_other(url: str, target: _Target | None, deadline: float, timeout: float, max_bytes: int) -> bytes:
    """A file:// URL (a regular file, read directly) or another fsspec URL, within the deadline."""
    if target is not None and target.scheme == "file":
        path = os.path.realpath(unquote(target.path.split("?", 1)[0]))
        try:  # non-blocking open: a FIFO must not hold the reader
            with os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as f:
                if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                    raise StorageError(f"{url[:200]} is not a regular file")
                body = f.read(max_bytes + 1)
        except OSError as e:
            raise StorageError(f"cannot read {url[:200]}: {e}") from None
        return _capped(url, body, max_bytes)
    result: list[Any] = []

    def read() -> None:
        import fsspec

        try:
            with fsspec.open(url, "rb") as f:
                result.append(f.read(max_bytes + 1))
        except Exception as e:  # reported to the caller below
            result.append(e)

    reader = threading.Thread(target=read, daemon=True, name="ogpu-fetch")
    reader.start()
    reader.join(max(0.0, deadline - time.monotonic()))
    if not result:
        raise StorageError(f"reading {url[:200]} took longer than {timeout:g} s")
    if isinstance(result[0], Exception):
        raise StorageError(f"cannot read {url[:200]}: {result[0]}")
    return _capped(url, result[0], max_bytes)


def _capped(url: str, body: bytes, max_bytes: int) -> bytes:
    if len(body) > max_bytes:
        raise StorageError(f"{url[:200]} is over the {max_bytes:,}-byte payload limit")
    return body


class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to an already checked address, the certificate checked against the URL's host."""

    def __init__(self, address: str, port: int, server_hostname: str, timeout: float) -> None:
        from requests.certs import where  # the CA bundle requests verifies with

        super().__init__(address, port, timeout=timeout, context=ssl.create_default_context(cafile=where()))
        self._server_hostname = server_hostname

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self._server_hostname)  # type: ignore[attr-defined]


def _http_get(
    t: _Target, allowed_host: str | None, deadline: float, timeout: float, max_bytes: int
) -> tuple[int, str | None, bytes]:
    address = checked_address(t.host, t.port, allowed_host)
    left = deadline - time.monotonic()
    if left <= 0:
        raise StorageError(f"reading {t.url[:200]} took longer than {timeout:g} s")
    conn: http.client.HTTPConnection = (
        _PinnedHTTPS(address, t.port, t.host, left)
        if t.scheme == "https"
        else http.client.HTTPConnection(address, t.port, timeout=left)
    )
    expired = threading.Event()
    opened: list[socket.socket] = []  # the response keeps reading it after conn lets go of it

    def expire() -> None:  # unblocks a read stuck on a trickle: the deadline is total
        expired.set()
        sock = opened[0] if opened else conn.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    watchdog = threading.Timer(left, expire)
    watchdog.daemon = True
    watchdog.start()
    default_port = 443 if t.scheme == "https" else 80
    host_header = (f"[{t.host}]" if ":" in t.host else t.host) + ("" if t.port == default_port else f":{t.port}")
    try:
        conn.connect()
        opened.append(conn.sock)
        if expired.is_set():
            raise OSError("deadline")
        conn.request("GET", t.path, headers={"Host": host_header, "Accept-Encoding": "identity"})
        resp = conn.getresponse()
        if resp.status != 200:
            return resp.status, resp.getheader("Location"), b""
        length = resp.getheader("Content-Length")
        if length is not None and length.isdigit() and int(length) > max_bytes:
            raise StorageError(f"{t.url[:200]} is over the {max_bytes:,}-byte payload limit")
        chunks, size = [], 0
        while size <= max_bytes:
            chunk = resp.read1(min(65536, max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if expired.is_set():  # the watchdog's shutdown reads as the end of the body
            raise OSError("deadline")
        return 200, None, _capped(t.url, b"".join(chunks), max_bytes)
    except StorageError:
        raise
    except (OSError, http.client.HTTPException) as e:
        if expired.is_set():
            raise StorageError(f"reading {t.url[:200]} took longer than {timeout:g} s") from None
        raise StorageError(f"cannot read {t.url[:200]}: {e}") from None
    finally:
        watchdog.cancel()
        conn.close()
