"""A batch whose every task fails the same visible way stops early with that reason (GitHub issue
12): real `ogpu-provider` worker running the echo source, which refuses a function it does not
have; the worker reports each failure as an `ogpu.provider.task.failed` event to the same Prefect
server, and the client's wait reads them. Nothing is mocked."""

from __future__ import annotations

import time

import pytest

from ogpu_prefect.batch import BatchFailedError
from ogpu_prefect.reconcile import find_published

from .test_worker import Fleet, fleet  # noqa: F401  (the fixture)

pytestmark = pytest.mark.usefixtures("prefect_harness")
TIMEOUT = 120


@pytest.mark.parametrize("flow", ["run_batch", "stream_batch"])
def test_every_task_failed_by_the_service_stops_the_batch_early_with_the_reason(fleet: Fleet, flow: str) -> None:  # noqa: F811
    from ogpu_prefect.flows.run_batch import run_batch
    from ogpu_prefect.flows.stream_batch import stream_batch

    source = fleet.publish_source()
    fleet.create_pool(f"{fleet.name}-pool", [source], f"{fleet.name}-provider1")
    fleet.start_worker(f"{fleet.name}-pool", "provider1")
    fleet.wait_registered(source, "provider1")
    start = fleet.chain.block_number() + 1
    began = time.time()
    state = (run_batch if flow == "run_batch" else stream_batch)(
        source,
        [{"i": i} for i in range(6)],
        10**16,
        fleet.network,
        fleet.wallet("client"),
        fleet.storage,
        function_name="no_such_function",
        task_timeout=TIMEOUT,
        max_republish=2,
        return_state=True,
    )
    took = time.time() - began
    assert state.is_failed(), fleet.worker_log("provider1")
    with pytest.raises(BatchFailedError) as info:
        state.result()
    assert "every input failed the same way" in str(info.value)
    assert "no_such_function" in str(info.value) or "404" in str(info.value) or "422" in str(info.value), info.value
    assert took < TIMEOUT, f"waited {took:.0f}s: the task timeout, not the providers' reports"
    published = [
        t for ts in find_published(fleet.chain, fleet.devnet.address("client"), source, start).values() for t in ts
    ]
    assert len(published) == 6, "nothing re-published"
