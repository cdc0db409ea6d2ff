"""A threaded HTTP server on 127.0.0.1 that runs in the background of this process (the test
stubs: IPFS API, fault proxy), and `DirectoryServer`, the devnet's payload file server, which
runs one in a process of its own."""

from __future__ import annotations

import http.server
import socket
import subprocess
import sys
import threading
from functools import partial
from typing import Any


def free_port(host: str = "127.0.0.1") -> int:
    """A free TCP port on `host` (default loopback), for a server (anvil, a service) about to listen there."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class _Server(http.server.ThreadingHTTPServer):
    # The default listen backlog is 5: a burst of callbacks (64 tasks ending together, each
    # POSTed on a new connection by the official service) overflowed it, and the service's
    # requests were reset, their results lost.
    request_queue_size = 1024
    daemon_threads = True


class LoopbackServer:
    """Context manager around a ThreadingHTTPServer bound to 127.0.0.1 (port 0: any free one), or
    to another local address (`host`: the docker bridge's, for containers' callbacks)."""

    def __init__(
        self, handler: type[http.server.BaseHTTPRequestHandler], port: int = 0, *, host: str = "127.0.0.1"
    ) -> None:
        self._httpd = _Server((host, port), handler)
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
    # A reply is two writes (headers, body): with Nagle on, the body waits for the client's
    # delayed ACK of the headers, 40 ms per request on a kept-alive connection.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


class DirectoryServer:
    """A folder served over loopback HTTP (`QuietHandler`) by a process of its own. In the process
    that also runs a batch, the server's threads share one GIL with CPU-busy threads (the waiting
    loop, Prefect's event sender), and each request waited for it at every syscall: ~50 ms a
    request under load. The server exits when `stop` is called or this process ends (its stdin
    closes)."""

    def __init__(self, root: str, port: int = 0) -> None:
        self.root, self._port = root, port
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def start(self) -> DirectoryServer:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "ogpu_prefect._loopback", self.root, str(self._port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line.strip().isdigit():
            self.stop()
            raise OSError(f"the file server for {self.root} did not start (port {self._port} taken?)")
        self._port = int(line)
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.close()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()

    def __enter__(self) -> DirectoryServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _serve_directory_until_stdin_closes(root: str, port: int) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C reaches the whole group: the parent stops us
    with LoopbackServer(partial(QuietHandler, directory=root), port) as server:  # type: ignore[arg-type]
        print(server.port, flush=True)
        sys.stdin.buffer.read()  # EOF: the parent stopped us or exited


if __name__ == "__main__":
    _serve_directory_until_stdin_closes(sys.argv[1], int(sys.argv[2]))
