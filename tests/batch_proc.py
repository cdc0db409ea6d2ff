"""`python -m tests.batch_proc SOURCE N BATCH_KEY NETWORK WALLET STORAGE`: run_batch in a process
of its own, for the scenario that kills it mid-publish (tests/scenarios.py). The blocks are
saved block names on the Prefect API of PREFECT_API_URL."""

from __future__ import annotations

import sys

from ogpu_prefect.flows.run_batch import run_batch


def main(argv: list[str]) -> int:
    source, n, key, network, wallet, storage = argv
    run_batch(
        source,
        [{"i": i} for i in range(int(n))],
        10**16,
        network,
        wallet,
        storage,
        function_name="echo",
        task_timeout=120,
        batch_key=key,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
