"""The batch lease's fence (issue 20) and its renewer's Prefect settings (issue 19), against a real
Prefect server and the real devnet.

- A holder whose lease was taken back (its renewal answered 410 Gone), or that could not renew
  for LEASE_S - FENCE_MARGIN_S, publishes nothing more.
- A run that takes over a lapsed lease waits for the previous holder's pending transactions before
  it reads what is published (tests/scenarios_lease.py: on the old code, 20 of 80 inputs were
  published twice).
- The renewer thread talks to the Prefect API of the caller's settings context (the old one lost
  a `temporary_settings` API URL and started a temporary server of its own)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ogpu_prefect import lease as lease_mod
from ogpu_prefect.batch import hold_batch
from ogpu_prefect.models import TaskInput
from ogpu_prefect.storage import LocalStore

from . import scenarios_lease
from .scenarios import PAYMENT, Ctx, run_flow
from .scenarios_lease import CutProxy

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture
def ctx(devnet, tmp_path: Path) -> Iterator[Ctx]:
    with LocalStore(tmp_path / "payloads") as store:
        yield Ctx(devnet, store, tmp_path)


def _publish(ctx: Ctx, source: str, n: int) -> None:
    client = ctx.client()
    inputs = [TaskInput(function_name="echo", data={"i": i}) for i in range(n)]
    client.publish_tasks(source, inputs, PAYMENT, client.chain.now() + 300, marks=[{"i": i} for i in range(n)])


def test_a_holder_whose_lease_was_taken_back_publishes_nothing(ctx: Ctx, monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.client.orchestration import get_client

    monkeypatch.setattr(lease_mod, "RENEW_S", 0.2)
    source = ctx.source()
    with hold_batch(f"taken-{time.time()}") as held:
        with get_client(sync_client=True) as c:  # the server takes the slot back (as after a lapse)
            c.release_concurrency_slots_with_lease(held.lease_id)
        time.sleep(1.0)  # the next renewal answers 410 Gone
        with pytest.raises(lease_mod.LeaseLostError):
            _publish(ctx, source, 3)
    assert ctx.chain.source(source).get_task_count() == 0


def test_a_holder_that_cannot_renew_stops_publishing_before_its_lease_can_lapse(
    ctx: Ctx, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Prefect API is cut (a real outage through a proxy): renewals fail; once the lease is no
    longer surely held (here after 0.5 s instead of 45 s), nothing more is published."""
    from prefect.settings import PREFECT_API_URL

    from .prefect_env import api_at

    monkeypatch.setattr(lease_mod, "RENEW_S", 0.2)
    monkeypatch.setattr(lease_mod, "FENCE_MARGIN_S", lease_mod.LEASE_S - 0.5)
    source = ctx.source()
    proxy = CutProxy(PREFECT_API_URL.value())
    with proxy, api_at(proxy.url), hold_batch(f"cut-{time.time()}"):
        proxy.cut(5.0)
        time.sleep(1.0)
        with pytest.raises(lease_mod.LeaseLostError):
            _publish(ctx, source, 3)
        time.sleep(4.5)  # the API is back: the slot is released
    assert ctx.chain.source(source).get_task_count() == 0


def test_a_batch_under_temporary_settings_renews_its_lease_on_that_api(
    ctx: Ctx, monkeypatch: pytest.MonkeyPatch
) -> None:
    """run_batch under `temporary_settings(PREFECT_API_URL=...)` (a per-context setting, here a
    proxy in front of the real server): every renewal goes to that API, and no temporary Prefect
    server starts. The old renewer thread saw no API URL: its renewals went to a temporary server
    (outside the test harness: 'Server process did not start', and an orphaned server; 0 renewals
    reached the caller's API)."""
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL

    from .prefect_env import api_at

    monkeypatch.setattr(lease_mod, "RENEW_S", 0.2)
    servers = dict(SubprocessASGIServer._instances)
    source = ctx.source()
    proxy = CutProxy(PREFECT_API_URL.value())
    with proxy, api_at(proxy.url), ctx.providers(source):
        state = run_flow(ctx, source, 3)
        renewals = proxy.count("/renew")
    assert state.is_completed(), state
    assert renewals >= 3, f"{renewals} renewal(s) reached the caller's API"
    assert SubprocessASGIServer._instances == servers, "a temporary Prefect server was started"


@pytest.mark.blocktime  # part of the 1 s-block tier (tests/test_blocktime_tier.py)
def test_a_run_taking_over_a_lapsed_lease_publishes_each_input_once(ctx: Ctx) -> None:
    """Issue 20's finding at a small size, on a chain mining every second (~2 minutes)."""
    outcome = scenarios_lease.lapsed_lease(ctx, 80)
    assert outcome.passed, outcome
