"""`python -m tests.batch_proc SOURCE N BATCH_KEY NETWORK WALLET STORAGE [run|stream]`: run_batch
(or stream_batch, 10 tasks in flight) in a process of its own, for the scenarios that kill it
mid-batch or run two at once (tests/scenarios.py). The blocks are saved block names on the
Prefect API of PREFECT_API_URL."""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    source, n, key, network, wallet, storage, *mode = argv
    inputs = [{"i": i} for i in range(int(n))]
    if mode == ["stream"]:
        from ogpu_prefect.flows.stream_batch import stream_batch

        stream_batch(
            source,
            inputs,
            10**16,
            network,
            wallet,
            storage,
            function_name="echo",
            task_timeout=120,
            batch_key=key,
            max_in_flight=10,
            cache=False,  # the scenarios are about publishing (scenarios.run_flow)
        )
        return 0
    from ogpu_prefect.flows.run_batch import run_batch

    run_batch(
        source,
        inputs,
        10**16,
        network,
        wallet,
        storage,
        function_name="echo",
        task_timeout=120,
        batch_key=key,
        cache=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
