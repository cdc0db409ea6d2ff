"""tests/prefect_env.py against the real harness: a flow run under `api_at` a proxy that then goes
away leaves none of Prefect's process-wide services on it (issue 21: the session's later events
all queued for the dead URL, a minute of retries each)."""

from __future__ import annotations

import time

import pytest
from prefect import flow, task

from ogpu_prefect.prefect_compat import drain_services

from .prefect_env import api_at
from .scenarios_lease import CutProxy

pytestmark = pytest.mark.usefixtures("prefect_harness")


@task
def _double(x: int) -> int:
    return 2 * x


@flow
def _tiny(n: int) -> int:
    return sum(_double(i) for i in range(n))


def test_services_started_under_api_at_do_not_outlive_it() -> None:
    from prefect.settings import PREFECT_API_URL

    with CutProxy(PREFECT_API_URL.value()) as proxy, api_at(proxy.url):
        assert _tiny(3) == 6  # its events and logs start Prefect's services on the proxy's URL
        assert proxy.count("/flow_runs/") > 0
    began = time.monotonic()
    assert _tiny(3) == 6  # on the harness again; the proxy is gone
    assert drain_services(30), "a service is still on the proxy's URL"
    assert time.monotonic() - began < 20
