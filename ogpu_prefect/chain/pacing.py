"""How a client treats an endpoint's limits: `RetryPolicy` (the one retry rule: how long a
transport outage is waited out, how long a rate-limit episode is) and `Pacer`, the token bucket
every call to one endpoint goes through.

There is one pacer per endpoint URL per process (`pacer_for`), like the wallet locks in nonces.py:
a limit belongs to the endpoint (a hosted plan's key is in its URL), not to one `Chain`, and a
process holds many `Chain`s on one URL (a worker's watcher, responder and journal; a flow's tasks)
that would each spend the whole limit if they paced alone. A limit the node signals (HTTP 429,
JSON-RPC -32005, `Retry-After`) stops every caller of that endpoint until it has passed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

LIMIT_EXCEEDED = -32005
"""The JSON-RPC error code of a call refused for the endpoint's rate limit (EIP-1474)."""


_LIMIT_WORDING = ("limit", "rate", "too many", "exceed", "capacity")
_RESULT_CAP_WORDING = ("result", "block range", "range too", "response size")  # a query too big, not a rate


def is_rate_limit(code: int, message: str) -> bool:
    """Whether a JSON-RPC error refuses a call for the endpoint's rate limit: -32005 (or 429) with
    a limit's wording. Some nodes also answer -32005 to a log query over their result cap ("query
    returned more than 10000 results"): that is no signal to wait, and asking again fails again."""
    text = message.lower()
    if any(w in text for w in _RESULT_CAP_WORDING):
        return False
    return code in (LIMIT_EXCEEDED, 429) and any(w in text for w in _LIMIT_WORDING)


@dataclass(frozen=True)
class RetryPolicy:
    """When to retry and when to give up: the package's one retry rule (the RPC's requests and
    batches, a storage upload, the event watch's polls). A transport failure (no answer, 5xx)
    counts toward `outage_s`, measured from the first failure of an unbroken run, and toward
    `max_tries` where one is set; an answer that says "too many" proves the node is there and counts
    only toward `throttled_s`, the generous bound on one request being refused, so that nothing
    waits forever. A read that raced with a new block is asked again `state_race_tries` times.
    Each request (or poller) follows its own `Retry`."""

    outage_s: float = 60.0
    backoff: float = 0.05
    max_backoff: float = 2.0
    throttled_s: float = 900.0
    default_pause_s: float = 1.0
    """The pause after a refusal that names no Retry-After."""
    max_tries: int | None = None
    state_race_tries: int = 8
    """Asks of a read that raced with a new block (rpc._state_race), 10 ms apart and doubling: about
    a second in all, for a node slowed by a loaded machine (4 asks 10 ms apart were not always
    enough)."""

    def next_delay(self, delay: float) -> float:
        return min(delay * 2, self.max_backoff)

    def race_delay(self, attempt: int) -> float:
        """The pause before asking again a read that raced with block production."""
        return min(0.01 * 2**attempt, 0.2)

    def start(self) -> Retry:
        return Retry(self)


class Retry:
    """One request's (or one poller's) run of failures under a `RetryPolicy`."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.tries = 0
        self.delay = policy.backoff
        self._failing_since: float | None = None
        self._refused_since: float | None = None

    def failed(self) -> float | None:
        """A transport failure: the pause before trying again, or None when the outage has lasted
        `outage_s` (or `max_tries` tries): give up."""
        self.tries += 1
        now = time.monotonic()
        self._failing_since = self._failing_since or now
        p = self.policy
        too_long = now + self.delay > self._failing_since + p.outage_s
        if too_long or (p.max_tries is not None and self.tries >= p.max_tries):
            return None
        delay, self.delay = self.delay, p.next_delay(self.delay)
        return delay

    def answered(self) -> None:
        """The other side answered: the outage (if any) is over."""
        self._failing_since, self.delay, self.tries = None, self.policy.backoff, 0

    def refused(self) -> bool:
        """A rate-limit refusal (the other side answered): whether to ask again, False once the
        refusals have lasted `throttled_s`."""
        self.answered()
        now = time.monotonic()
        self._refused_since = self._refused_since or now
        return now - self._refused_since <= self.policy.throttled_s


def retry_after_seconds(value: str | None) -> float | None:
    """A `Retry-After` header, in seconds or as an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


class Pacer:
    """A token bucket of `rate` calls/s (each call in a batch counts), shared by the threads of a
    process. Its burst is half a second's worth: a node whose own bucket holds a second's worth
    absorbs our threads' jitter. With no configured rate it adapts to the node's signals: a refusal
    halves the rate it observed, then the rate climbs back 5% a second, and a minute with no
    refusal lifts it."""

    BURST_S = 0.5
    LIFT_AFTER_S = 60.0

    def __init__(self, url: str, rate: float | None = None) -> None:
        self.url = url
        self.label = endpoint_label(url)  # logs never show a path (hosted endpoints put keys there)
        self.configured = rate
        self.adaptive: float | None = None
        self._lock = threading.Lock()
        self._tokens = self._capacity(rate)
        self._at = time.monotonic()
        self.paused_until = 0.0
        self._recent: deque[tuple[float, int]] = deque()  # (when, calls) over the last 2 s
        self._last_refusal = -1e9
        self._last_cut = -1e9
        self.refusals = 0
        self._episode_refusals = 0

    @property
    def rate(self) -> float | None:
        return self.configured if self.configured is not None else self.adaptive

    def configure(self, rate: float | None) -> None:
        """The lowest rate any caller in this process configured for the endpoint wins."""
        if rate is not None:
            with self._lock:
                self.configured = rate if self.configured is None else min(self.configured, rate)

    def chunk(self, wanted: int) -> int:
        """How many calls one batch may carry: never more than the bucket can hold."""
        rate = self.rate
        return wanted if rate is None else max(1, min(wanted, int(self._capacity(rate))))

    def acquire(self, calls: int) -> None:
        """Blocks until `calls` may be sent (and any pause a refusal set has passed)."""
        while True:
            with self._lock:
                now = time.monotonic()
                wait = self.paused_until - now
                if wait <= 0:
                    wait = self._take(now, calls)
                if wait <= 0:
                    return
            time.sleep(min(wait, 1.0))

    def _take(self, now: float, calls: int) -> float:
        self._recent.append((now, calls))
        while self._recent and self._recent[0][0] < now - 2.0:
            self._recent.popleft()
        rate = self._current_rate(now)
        if rate is None:
            return 0.0
        capacity = self._capacity(rate)
        self._tokens = min(capacity, self._tokens + (now - self._at) * rate)
        self._at = now
        need = min(calls, capacity)
        if self._tokens >= need:
            self._tokens -= calls  # a batch larger than the bucket runs it into debt
            return 0.0
        self._recent.pop()
        return (need - self._tokens) / rate

    def _current_rate(self, now: float) -> float | None:
        if self.configured is not None or self.adaptive is None:
            return self.rate
        quiet = now - self._last_refusal
        if quiet > self.LIFT_AFTER_S:
            self.adaptive = None
            log.info("RPC %s: no rate limit signalled for %.0fs; pacing lifted", self.label, quiet)
            return None
        return self.adaptive * 1.05 ** max(0.0, now - self._last_cut)

    def refused(self, retry_after: float | None, default_pause_s: float) -> None:
        """The node said "too many": every caller waits out `retry_after`; with no configured
        rate, the rate is halved (at most once per pause). Logged once per episode."""
        with self._lock:
            now = time.monotonic()
            pause = default_pause_s if retry_after is None else retry_after
            self.paused_until = max(self.paused_until, now + pause)
            self.refusals += 1
            new_episode = now - self._last_refusal > max(10.0, pause * 2)
            self._episode_refusals = 1 if new_episode else self._episode_refusals + 1
            self._last_refusal = now
            if self.configured is None and now - self._last_cut >= max(pause, 1.0):
                observed = sum(n for t, n in self._recent if t >= now - 2.0) / 2.0
                current = self._current_rate(now)
                base = observed if current is None else current
                self.adaptive = max(1.0, base / 2)
                self._last_cut = now
                self._tokens = 0.0
                self._at = now
            if new_episode:
                log.info(
                    "RPC %s is rate-limiting (pausing %.1fs); pacing at %s",
                    self.label,
                    pause,
                    f"{self.rate:.1f} calls/s" if self.rate else "the node's pace",
                )

    def _capacity(self, rate: float | None) -> float:
        return 0.0 if rate is None else max(1.0, rate * self.BURST_S)


_pacers: dict[str, Pacer] = {}
_pacers_lock = threading.Lock()


def pacer_for(url: str, rate: float | None = None) -> Pacer:
    """This process' pacer for the endpoint `url`, configured with `rate` if given."""
    with _pacers_lock:
        pacer = _pacers.get(url)
        if pacer is None:
            pacer = _pacers[url] = Pacer(url, rate)
            return pacer
    pacer.configure(rate)
    return pacer


def endpoint_label(url: str) -> str:
    """The endpoint as logs and errors show it: scheme, host and port; a path or query (where
    hosted endpoints put API keys) and credentials become "/…"."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    hidden = (parts.path not in ("", "/")) or parts.query or parts.username
    return f"{parts.scheme}://{netloc}{'/…' if hidden else ''}" if parts.scheme else "<rpc>"
