"""A loopback stand-in for the real network's IPFS upload API (PROTOCOL.md section 6): a multipart
`POST /file/create` with one `file` field answers 200 `{"link": <gateway url>}`; a `GET` of that
link returns the bytes. Content-addressed by sha256, so re-uploads return the same link."""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
import http.server
import json
from typing import Any

from ogpu_prefect._loopback import LoopbackServer


class IpfsStub(LoopbackServer):
    def __init__(
        self, fail_next: int = 0, fail_after: int | None = None, *, host: str = "127.0.0.1", name: str | None = None
    ) -> None:
        self.fail_next = fail_next  # answer this many uploads with HTTP 503 first
        self.fail_after = fail_after  # then, after this many uploads, every upload fails (an outage)
        self.files: dict[str, bytes] = {}
        self.uploads = 0
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                if self.path != "/file/create":
                    return self._reply(404, b'{"error":"not found"}')
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if stub.fail_next > 0:
                    stub.fail_next -= 1
                    return self._reply(503, b'{"error":"busy"}')
                if stub.fail_after is not None and stub.uploads >= stub.fail_after:
                    return self._reply(503, b'{"error":"down"}')
                msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                    b"Content-Type: " + self.headers["Content-Type"].encode() + b"\r\n\r\n" + body
                )
                parts = [p for p in msg.iter_parts() if p.get_param("name", header="content-disposition") == "file"]
                if len(parts) != 1:
                    return self._reply(400, b'{"error":"expected one file field"}')
                content = parts[0].get_payload(decode=True) or b""
                cid = "Qm" + hashlib.sha256(content).hexdigest()[:44]
                stub.files[cid] = content
                stub.uploads += 1
                address, port = self.server.server_address[:2]
                link = f"http://{name or address}:{port}/ipfs/{cid}"
                self._reply(200, json.dumps({"link": link}).encode())

            def do_GET(self) -> None:  # noqa: N802
                cid = self.path.rsplit("/", 1)[-1]
                if not self.path.startswith("/ipfs/") or cid not in stub.files:
                    return self._reply(404, b'{"error":"not found"}')
                self._reply(200, stub.files[cid])

            def _reply(self, code: int, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(Handler, host=host)


if __name__ == "__main__":
    import sys

    with IpfsStub(host=sys.argv[1], name=sys.argv[2] if len(sys.argv) > 2 else None) as stub:
        print(stub.port, flush=True)
        sys.stdin.buffer.read()  # EOF: the parent stopped us or exited
