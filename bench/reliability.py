"""Money safety, measured: every scenario of tests/scenarios.py at full size, each on a fresh devnet,
against one real Prefect server (Prefect's test harness, SQLite). Prints a table (scenario, tasks
expected / on chain, configs published twice, wei stranded, keys found in any text or pickle) and
ends with

    scenarios=<n> passed=<n> duplicates=<n> stranded_wei=<n> leaked_keys=<n>

    uv run python bench/reliability.py [--only retry,crash,...] [--outage 30] [--smoke]

`--smoke` runs SMOKE, a few quick scenarios of the plan, at their sizes.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _smoke import parse_args  # noqa: E402

from ogpu_prefect.chain import devnet as devnet_mod  # noqa: E402
from ogpu_prefect.storage import LocalStore  # noqa: E402
from tests import scenarios, scenarios_fetch, scenarios_keys, scenarios_lease  # noqa: E402
from tests.scenarios import Ctx, Outcome  # noqa: E402


def plan(outage: float, api_url: str) -> list[tuple[str, str | None, object]]:
    """(name, hardfork, run(ctx) -> Outcome), at the sizes the issue asks for."""
    return [
        ("retry", None, lambda c: scenarios.retry_after_publish(c, 100)),
        ("crash", None, lambda c: scenarios.crash_and_rerun(c, 500, api_url)),
        ("rerun", None, lambda c: scenarios.rerun_same_key(c, 100)),
        ("stream_crash", None, lambda c: scenarios.stream_crash_and_resume(c, 500, api_url)),
        ("same_key_at_once", None, lambda c: scenarios.same_key_at_once(c, 200, api_url)),
        ("same_key_at_once_stream", None, lambda c: scenarios.same_key_at_once(c, 200, api_url, "stream")),
        ("conflict_leaves_holder", None, lambda c: scenarios.conflict_leaves_holder(c, 100, api_url)),
        ("storage_outage", None, lambda c: scenarios.storage_outage_mid_publish(c, 1000)),
        ("deadline", None, lambda c: scenarios.deadline_before_expiry(c, 100)),
        ("shared_wallet_2", None, lambda c: scenarios.wallet_shared_by_processes(c, 2, 200)),
        ("shared_wallet_4", None, lambda c: scenarios.wallet_shared_by_processes(c, 4, 200)),
        ("rpc_outage_publish", None, lambda c: scenarios.rpc_outage(c, 200, outage, "publish")),
        ("rpc_outage_wait", None, lambda c: scenarios.rpc_outage(c, 200, outage, "wait")),
        ("hostile_urls", None, lambda c: scenarios.hostile_response_urls(c, 30)),
        ("keys", None, scenarios.key_in_wrong_fields),
        ("forged_reputation", None, lambda c: scenarios_keys.forged_reputation(c, 50)),
        ("abi_firewall", None, lambda c: scenarios.abi_firewall(c, 20)),
        ("legacy_gas", "berlin", lambda c: scenarios.legacy_gas_chain(c, 50)),
        ("fetch_loopback", None, lambda c: scenarios_fetch.provider_fetch(c, "loopback", 5)),
        ("fetch_private", None, lambda c: scenarios_fetch.provider_fetch(c, "private", 5)),
        ("fetch_file", None, lambda c: scenarios_fetch.provider_fetch(c, "file", 5)),
        ("fetch_redirect", None, lambda c: scenarios_fetch.provider_fetch(c, "redirect", 5)),
        ("fetch_slow", None, lambda c: scenarios_fetch.provider_fetch(c, "slow", 5)),
        ("fetch_dots", None, lambda c: scenarios_fetch.provider_fetch(c, "dots", 5)),
        ("stream_inputs_escape", None, scenarios_fetch.stream_inputs_escape),
        ("scheduled_pattern_escape", None, scenarios_fetch.scheduled_pattern_escape),
        ("unreadable_read_url", None, lambda c: scenarios_fetch.unreadable_read_url(c, 20)),
        ("lapsed_lease", None, lambda c: scenarios_lease.lapsed_lease(c, 400)),
    ]


SMOKE = ("retry", "keys")  # a publish retried, the key scan: quick, on the harness a full run uses


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help="comma-separated scenario names")
    parser.add_argument("--outage", type=float, default=30.0, help="seconds the RPC node is unreachable")
    args = parse_args(parser, only=",".join(SMOKE), outage=2.0)
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    outcomes: list[Outcome] = []
    with prefect_test_harness(server_startup_timeout=120):
        api_url = PREFECT_API_URL.value()
        wanted = set(filter(None, args.only.split(",")))
        for name, hardfork, run in plan(args.outage, api_url):
            if wanted and name not in wanted:
                continue
            net = devnet_mod.start(hardfork=hardfork)
            t0 = time.monotonic()
            try:
                with tempfile.TemporaryDirectory() as tmp, LocalStore(Path(tmp) / "payloads") as store:
                    outcome = run(Ctx(net, store, Path(tmp)))  # type: ignore[operator]
            except Exception as e:
                outcome = Outcome(name, 0, problems=[f"{type(e).__name__}: {e}"])
                traceback.print_exc()
            finally:
                net.stop()
            outcome.detail = f"{outcome.detail} ({time.monotonic() - t0:.0f} s)".strip()
            outcomes.append(outcome)
            print(
                f"{'ok  ' if outcome.passed else 'FAIL'} {outcome.name}: {outcome.detail} {outcome.problems or ''}",
                flush=True,
            )
    print()
    print("| scenario | tasks expected / on chain | published twice | wei stranded | keys found | passed |")
    print("|---|---|---|---|---|---|")
    for o in outcomes:
        print(
            f"| {o.name} | {o.expected} / {o.on_chain} | {o.duplicates} | {o.stranded_wei} | {o.leaked_keys} | "
            f"{'yes' if o.passed else 'NO'} |"
        )
    print()
    print(
        f"scenarios={len(outcomes)} passed={sum(o.passed for o in outcomes)} "
        f"duplicates={sum(o.duplicates for o in outcomes)} stranded_wei={sum(o.stranded_wei for o in outcomes)} "
        f"leaked_keys={sum(o.leaked_keys for o in outcomes)}"
    )
    return 0 if all(o.passed for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
