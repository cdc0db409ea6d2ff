"""A small JSON-RPC client: one HTTP session per instance (no globals), batch requests, and
retries under one `RetryPolicy` (chain/pacing.py): transient transport failures are retried with
backoff for up to `outage_s` (a node that is away for a while is waited for, not given up on at
once); a rate limit (HTTP 429, JSON-RPC -32005, `Retry-After`) slows every caller of the endpoint
down through its `Pacer` and never counts as an outage. `Web3Rpc` sends through a user's `Web3`.

Retrying is safe for everything this package sends: reads are idempotent, and a transaction is
always re-sent as the same signed bytes (same nonce, same hash), so a node that already has it
answers "already known" rather than executing it twice.
"""

from __future__ import annotations

import itertools
import logging
import time
from typing import Any
from urllib.parse import urlsplit

import requests

from .errors import RpcError, TxRpcError
from .pacing import RetryPolicy, endpoint_label, is_rate_limit, pacer_for, retry_after_seconds

log = logging.getLogger(__name__)

TRANSIENT_STATUS = {408, 425, 500, 502, 503, 504}
"""HTTP statuses of a node that is (for now) not answering: they count toward the outage."""


class RateLimitedError(TxRpcError):
    """The endpoint kept refusing a request for its rate limit longer than the policy's
    `throttled_s`."""


def http_session(connections: int = 64) -> requests.Session:
    """A session that keeps up to `connections` connections per host alive: many threads share
    it (requests' default keeps 10, and every request over that opens a new connection)."""
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=8, pool_maxsize=connections)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class Rpc:
    """JSON-RPC over HTTP. `call` raises RpcError for a JSON-RPC error; `batch` returns results
    with RpcError instances in place of failed entries. `rate_limit` (calls/s, each call in a
    batch counting) paces every call this process makes to `url`; `policy` overrides
    `outage_s`/`backoff`."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 30.0,
        outage_s: float = 60.0,
        backoff: float = 0.05,
        rate_limit: float | None = None,
        policy: RetryPolicy | None = None,
    ) -> None:
        self.url = url
        self.label = endpoint_label(url)  # what logs and errors show: hosted endpoints put keys in paths
        self.timeout = timeout
        self.policy = policy or RetryPolicy(outage_s=outage_s, backoff=backoff)
        self.outage_s = self.policy.outage_s
        self.pacer = pacer_for(url, rate_limit)
        self._ids = itertools.count(1)
        self._session = http_session()  # a worker runs dozens of tasks at once

    def __repr__(self) -> str:
        return f"Rpc({self.label!r})"

    def close(self) -> None:
        self._session.close()

    def call(self, method: str, params: list[Any] | None = None) -> Any:
        tries = self.policy.state_race_tries
        for attempt in range(tries):
            reply = self._post({"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params or []})
            try:
                return _result(reply, method)
            except RpcError as e:
                if not _state_race(e) or attempt == tries - 1:
                    raise
                time.sleep(self.policy.race_delay(attempt))

    def batch(self, calls: list[tuple[str, list[Any]]], *, chunk: int = 200) -> list[Any]:
        """Sends calls as JSON-RPC batches of `chunk` (fewer under a rate limit); results come back
        in call order. Entries refused for the rate limit (-32005), or that lost a race with block
        production, are asked again."""
        out = self._batch(calls, chunk)
        retry = self.policy.start()
        while again := [i for i, r in enumerate(out) if isinstance(r, RpcError) and _limited(r)]:
            if not retry.refused():
                break  # the entries stay refused (RpcError -32005)
            self.pacer.refused(None, self.policy.default_pause_s)
            for i, r in zip(again, self._batch([calls[i] for i in again], chunk)):
                out[i] = r
        for attempt in range(self.policy.state_race_tries - 1):
            again = [i for i, r in enumerate(out) if isinstance(r, RpcError) and _state_race(r)]
            if not again:
                break
            time.sleep(self.policy.race_delay(attempt))
            for i, r in zip(again, self._batch([calls[i] for i in again], chunk)):
                out[i] = r
        return out

    def _batch(self, calls: list[tuple[str, list[Any]]], chunk: int) -> list[Any]:
        out: list[Any] = []
        chunk = self.pacer.chunk(chunk)  # a batch over the endpoint's burst would always be refused
        for start in range(0, len(calls), chunk):
            part = calls[start : start + chunk]
            ids = [next(self._ids) for _ in part]
            body = [{"jsonrpc": "2.0", "id": i, "method": m, "params": p} for i, (m, p) in zip(ids, part)]
            replies = self._post(body)
            if not isinstance(replies, list):  # a node that rejects the whole batch
                err = _as_error(replies.get("error", {}), "batch")
                out.extend(err for _ in part)
                continue
            by_id = {r.get("id"): r for r in replies}
            for i, (method, _) in zip(ids, part):
                reply = by_id.get(i)
                if reply is None:
                    out.append(TxRpcError(f"{method}: no reply in batch"))
                    continue
                try:
                    out.append(_result(reply, method))
                except RpcError as e:
                    out.append(e)
        return out

    def _post(self, body: Any) -> Any:
        """Sends one request or batch under the pacer. Transport failures are retried with backoff
        until `outage_s` has passed since the first of an unbroken run (then TxRpcError); rate-limit
        refusals pause every caller of the endpoint and are retried until `throttled_s` (then
        RateLimitedError). Resending is safe: see above."""
        policy, calls = self.policy, len(body) if isinstance(body, list) else 1
        retry = policy.start()
        while True:
            self.pacer.acquire(calls)
            try:
                return self._attempt(body)
            except _Refused as e:
                if not retry.refused():  # the node answered: no outage, but refused for too long
                    raise RateLimitedError(
                        f"RPC {self.label} refused a request for its rate limit for {policy.throttled_s:.0f}s"
                    ) from None
                self.pacer.refused(e.retry_after, policy.default_pause_s)
            except (
                requests.ConnectionError,
                requests.Timeout,
                requests.exceptions.ChunkedEncodingError,
                ValueError,
                _Transient,
            ) as e:
                delay = retry.failed()
                if delay is None:
                    raise TxRpcError(
                        f"RPC {self.label} unreachable for {policy.outage_s:.0f}s ({retry.tries} tries): "
                        f"{self._masked(e)}"
                    ) from None
                if retry.tries == 3:
                    log.warning(
                        "RPC %s unreachable (%s); retrying for up to %.0fs",
                        self.label,
                        self._masked(e),
                        policy.outage_s,
                    )
                time.sleep(delay)
            except requests.HTTPError as e:
                raise TxRpcError(f"RPC {self.label}: {self._masked(e)}") from None

    def _masked(self, error: Exception) -> str:
        """`error`'s text with the endpoint's path and query (an API key, often) left out."""
        parts = urlsplit(self.url)
        text = str(error).replace(self.url, self.label)
        tail = parts.path + (f"?{parts.query}" if parts.query else "")
        return text.replace(tail, "/…") if len(tail) > 1 else text

    def _attempt(self, body: Any) -> Any:
        """One send; a refusal for the rate limit, however the node words it, raises _Refused."""
        try:
            reply = self._transport(body)
        except requests.HTTPError as e:
            if e.response is not None and e.response.status_code == 429:  # through a Web3 provider
                raise _Refused(retry_after_seconds(e.response.headers.get("Retry-After"))) from None
            raise
        if isinstance(reply, dict) and _limited(_as_error(reply.get("error") or {}, "request")):
            raise _Refused(None)
        return reply

    def _transport(self, body: Any) -> Any:
        resp = self._session.post(self.url, json=body, timeout=self.timeout)
        if resp.status_code == 429:
            raise _Refused(retry_after_seconds(resp.headers.get("Retry-After")))
        if resp.status_code in TRANSIENT_STATUS:
            raise _Transient(f"HTTP {resp.status_code}")
        resp.raise_for_status()
        return resp.json()


class Web3Rpc(Rpc):
    """JSON-RPC through a user's `Web3` instance: its provider's transport, endpoint, headers and
    session. Replies are read raw (our decoders need the JSON-RPC values), so the instance's
    result-formatting middleware does not apply."""

    def __init__(self, w3: Any, **options: Any) -> None:
        provider = w3.provider
        super().__init__(str(getattr(provider, "endpoint_uri", None) or provider), **options)
        self.provider = provider

    def _transport(self, body: Any) -> Any:
        if isinstance(body, list):
            replies = list(self.provider.make_batch_request([(b["method"], b["params"]) for b in body]))
            if len(replies) != len(body) or not all(isinstance(r, dict) for r in replies):
                return replies[0] if replies and isinstance(replies[0], dict) else {"error": {"message": "batch"}}
            return [{**r, "id": b["id"]} for b, r in zip(body, replies)]  # web3 answers in request order
        return dict(self.provider.make_request(body["method"], body["params"]))


class _Transient(Exception):
    pass


class _Refused(Exception):
    def __init__(self, retry_after: float | None) -> None:
        super().__init__("rate-limited")
        self.retry_after = retry_after


def _limited(e: RpcError) -> bool:
    return is_rate_limit(e.code, e.message)


def _state_race(e: RpcError) -> bool:
    """A node without history (anvil --prune-history) answers a read of "latest" that raced with a
    new block this way; asking again reads the new block."""
    return "BlockOutOfRange" in e.message and "requested" in e.message


def _result(reply: dict[str, Any], method: str) -> Any:
    if "error" in reply and reply["error"] is not None:
        raise _as_error(reply["error"], method)
    return reply.get("result")


def _as_error(error: dict[str, Any], method: str) -> RpcError:
    return RpcError(method, int(error.get("code", 0)), str(error.get("message", "")), error.get("data"))
