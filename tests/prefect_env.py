"""Pointing this test process's Prefect at another API for a while (a server or stack a test
starts, a proxy in front of the harness), without leaving Prefect's process-wide services behind
on it.

Why: Prefect's services (events, API logs, concurrency slots) are one per process, and each talks
to the API that was current when it started for as long as it runs
(ogpu_prefect.prefect_compat.drain_services). One started under a `temporary_settings` API URL
keeps sending there after the block ends and the server stops: every later event of the session
waited a minute of retries on the dead URL and failed, and the harness's teardown waited on all of
them (issue 21: a 600 s timeout at the session's end)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ogpu_prefect.prefect_compat import drain_services

DRAIN_S = 120.0
"""How long the services may take to send what they hold (seconds, on a loaded machine)."""


@contextmanager
def api_at(url: str) -> Iterator[None]:
    """PREFECT_API_URL=url in this context. On the way out, while `url` still answers (its server
    must outlive this block), Prefect's services are drained: the next use starts them on the API
    then current."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: url}):
        try:
            yield
        finally:
            drained = drain_services(DRAIN_S)
        assert drained, f"Prefect's services were still sending to {url} after {DRAIN_S:.0f} s"


def drained_or_fail(where: str) -> None:
    """Fails if Prefect's services of this process cannot send what they hold within DRAIN_S: the
    sign of one left talking to an API that is gone (use api_at)."""
    import sys

    if "prefect" not in sys.modules:
        return  # no service ever started
    assert drain_services(DRAIN_S), (
        f"{where}: Prefect's services were still sending after {DRAIN_S:.0f} s: a test left them on a Prefect "
        "API that is gone (point Prefect at a temporary API with tests/prefect_env.api_at)"
    )
