"""Scenarios about who may write what a client trusts (bench/reliability.py, tests/test_reputation.py).

`forged_reputation`: anyone with access to the Prefect API can write a Variable. A forged
reputation record banning the only (honest) provider of a MANUAL source until 2099 must not make a
batch fail ("every response was refused") with its escrow held until expiry: the record is not
sealed by the client's wallet, so it is ignored (and reported), and the batch completes."""

from __future__ import annotations

import time
from typing import Any

from ogpu_prefect.chain.types import DeliveryMethod
from ogpu_prefect.reputation import ProviderRecord, record_name

from .scenarios import Ctx, Outcome, audit, finalized, reported_waiting, run_flow

FOREVER = 4070908800.0  # 2099-01-01


def forge_ban(ctx: Ctx, role: str) -> str:
    """Writes, as any API user can, a record banning `role` until 2099 under the name the client's
    book reads first (its wallet's: the tag in the name is public, in every Variable listing),
    and under the shared name of earlier versions; returns the wallet's name. (Forging only the
    shared name went unread once an earlier scenario had written the wallet's own record.)"""
    from prefect.variables import Variable

    from ogpu_prefect.chain.signing import derive_secret
    from ogpu_prefect.reputation_store import SEAL_LABEL, owner_tag

    provider = ctx.devnet.address(role)
    secret = derive_secret(ctx.wallet().signer(), SEAL_LABEL)
    assert secret is not None
    chain_id = ctx.chain.network.chain_id
    names = [record_name(chain_id, provider, owner_tag(secret)), record_name(chain_id, provider)]
    record = ProviderRecord(provider.lower(), {"validator": 50}, strikes=50, bans=9, banned_until=FOREVER)
    for name in names:
        Variable.set(name, record.to_json(), overwrite=True)
    return names[0]


def forged_reputation(ctx: Ctx, n: int) -> Outcome:
    """A MANUAL batch served by one honest provider, whose record was forged to a ban: every
    input finalized through it, no escrow held, and the forged record reported in the run's logs."""
    from prefect.client.orchestration import get_client

    outcome, source = Outcome("forged reputation record", n), ctx.source(DeliveryMethod.MANUAL_CONFIRMATION)
    name = forge_ban(ctx, "provider1")
    start = ctx.chain.block_number()
    with ctx.providers(source, ("provider1",)):
        state = run_flow(ctx, source, n, delivery="manual", delivery_options={"policy": "first"}, max_republish=0)
        try:
            results: list[Any] = state.result()
        except Exception as e:
            outcome.problems.append(f"the batch failed: {type(e).__name__}: {e}"[:300])
            results = []
    finalized(outcome, results, n)
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId, LogFilterLevel
    from prefect.client.schemas.sorting import LogSort

    # this batch's own warnings: the workspace's latest 200 may all be other runs' (a bench)
    warnings = LogFilter(
        level=LogFilterLevel(ge_=30), flow_run_id=LogFilterFlowRunId(any_=[state.state_details.flow_run_id])
    )
    deadline = time.monotonic() + 15  # logs reach the API in batches, after the flow returned
    while True:
        with get_client(sync_client=True) as client:
            logs = [log.message for log in client.read_logs(warnings, limit=200, sort=LogSort.TIMESTAMP_DESC)]
        reported = any(name in line and "not written by a client of this wallet" in line for line in logs)
        if reported or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if not reported:
        outcome.problems.append(f"the forged record {name} was not reported")
    outcome.detail = f"{sum(r.status == 'finalized' for r in results)}/{n} finalized despite a forged ban"
    return audit(ctx, outcome, source, start, reported_waiting(results))
