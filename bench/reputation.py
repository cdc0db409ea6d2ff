"""Provider reputation, measured (tests/reputation_scenario.py at size): a fresh devnet, Prefect's
test harness (SQLite), a stand-in provider that answers wrong and first, an honest one that
answers after a second and leaves the first `--skip` tasks to the other. Two run_batch calls of
`--tasks` inputs each (manual delivery with a validator, reputation k=`--k`); prints one line per
batch (inputs, finalized, by the honest provider, tasks published, re-published inputs, the wrong
provider's refusals and bans, escrow left waiting, wall time), then a batch with reputation off
(the wrong provider still answering) and one with the wrong provider away and reputation off (the
floor), and ends with

    batch1_s=<s> batch2_s=<s> off_s=<s> floor_s=<s> bans=<n> republished=<n> all_honest=<yes|no>

    uv run python bench/reputation.py [--tasks 100] [--skip 10] [--k 3] [--smoke]
    uv run python bench/reputation.py --decide 10000   # the waiting loop's pass, with and without a book
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _smoke import parse_args  # noqa: E402

from ogpu_prefect.chain import devnet as devnet_mod  # noqa: E402
from ogpu_prefect.storage import LocalStore  # noqa: E402
from tests.reputation_scenario import clear_records, market  # noqa: E402
from tests.scenarios import Ctx  # noqa: E402


def decide_cost(n: int) -> None:
    """CPU of one pass of the waiting loop's decisions over `n` open tasks with two responses each,
    without and with a reputation book (nobody banned: the same responses reach the delivery
    method): what the book adds per poll."""
    from ogpu_prefect.plugins.manual import Manual
    from ogpu_prefect.reputation import MemoryStore, ReputationBook, ReputationPolicy
    from tests.unit.test_reputation import H, W, response, tracked, waiter

    for label, book in (("without", None), ("with", ReputationBook(1, ReputationPolicy(k=1), MemoryStore()))):
        ts = [tracked(i, response(2 * i, W, {"r": 0}), response(2 * i + 1, H, {"r": i})) for i in range(n)]
        w = waiter(Manual(policy="lowest_price", window=1e9), book, *ts)  # waits: every pass decides all
        w._decide(ts, 0)  # payloads read once, as in a real wait
        passes = 10
        t0 = time.process_time()
        for _ in range(passes):
            w._decide(ts, 0)
        print(f"{label} a book: {(time.process_time() - t0) / passes * 1000:.1f} ms per pass over {n} tasks")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--skip", type=int, default=10, help="tasks the honest provider leaves to the wrong one")
    parser.add_argument("--k", type=int, default=3, help="refusals before a ban")
    parser.add_argument("--decide", type=int, default=0, help="only time the waiting loop's pass over N tasks")
    args = parse_args(parser, tasks=4, skip=1, k=1)
    if args.decide:
        decide_cost(args.decide)
        return 0
    from prefect.testing.utilities import prefect_test_harness

    options = {"k": args.k, "forgive_s": 3600}
    with prefect_test_harness(server_startup_timeout=120):
        net = devnet_mod.start()
        try:
            with tempfile.TemporaryDirectory() as tmp, LocalStore(Path(tmp) / "payloads") as store:
                ctx = Ctx(net, store, Path(tmp))
                clear_records()
                with market(ctx, skip=args.skip) as m:
                    first_results, first = m.batch(args.tasks, options=options)
                    print("batch 1:", first.line(), flush=True)
                    second_results, second = m.batch(args.tasks, options=options)
                    print("batch 2:", second.line(), flush=True)
                    _, off = m.batch(args.tasks, options=None, reputation="off")
                    print("reputation off:", off.line(), flush=True)
                    m.state["away"] = True  # the floor: the honest provider alone, no records
                    _, floor = m.batch(args.tasks, options=None, reputation="off")
                    print("honest alone, reputation off:", floor.line(), flush=True)
        finally:
            net.stop()
    honest = first.by_honest + second.by_honest == 2 * args.tasks
    print(
        f"batch1_s={first.wall_s:.1f} batch2_s={second.wall_s:.1f} off_s={off.wall_s:.1f} floor_s={floor.wall_s:.1f} "
        f"bans={first.bans + second.bans} "
        f"republished={first.republished_inputs + second.republished_inputs} all_honest={'yes' if honest else 'no'}"
    )
    return 0 if honest else 1


if __name__ == "__main__":
    sys.exit(main())
