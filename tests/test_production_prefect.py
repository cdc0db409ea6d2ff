"""run_batch and the ogpu-provider worker on the production stack: a Prefect API server on
PostgreSQL with Redis messaging (ogpu_prefect/stack.py), as users run Prefect in production (the
rest of the suite runs on the test harness's SQLite server). Events reach the server's store,
provider flow runs show Running then Completed with their infrastructure id, and the provider's
summary artifact is written."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ogpu_prefect.chain.types import TaskStatus
from ogpu_prefect.storage import LocalStore

from .scenarios import Ctx
from .test_worker import Fleet

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def production_api() -> Iterator[str]:

    from ogpu_prefect.stack import PrefectStack

    from .prefect_env import api_at

    home = Path(tempfile.mkdtemp(prefix="ogpu-prod-"))
    home.chmod(0o711)  # PostgreSQL runs as its own user and must reach its data folder
    with (
        PrefectStack(home=home, stack="production", servers=1) as info,
        api_at(info.api_url),
    ):
        yield info.api_url


def stored_count(event: str, since: float) -> int:
    from ogpu_prefect.events import stored_counts

    return stored_counts(event, since).get(event, 0)


def test_run_batch_on_postgres_and_redis(production_api: str, devnet: Any, tmp_path: Path) -> None:
    began = time.time()
    with LocalStore(tmp_path / "payloads") as store:
        ctx = Ctx(devnet, store, tmp_path)
        source = ctx.source()
        from .flow_proc import run_flow_elsewhere
        from .scenarios import PAYMENT, save_blocks

        names = save_blocks(ctx, "prod")
        with ctx.providers(source):
            inputs = [{"i": i} for i in range(10)]
            results = run_flow_elsewhere(
                production_api, "run_batch", source, inputs, PAYMENT, *names, function_name="echo", task_timeout=120
            )
    assert [r.status for r in results] == ["finalized"] * 10
    from ogpu_prefect.events import stored_counts

    deadline = time.time() + 30
    wanted = {"ogpu.task.finalized": 10, "ogpu.batch.started": 1, "ogpu.batch.completed": 1}
    while time.time() < deadline:  # the server's event pipeline (Redis) stores them shortly after
        counts = stored_counts("ogpu.", began)
        if all(counts.get(k, 0) >= v for k, v in wanted.items()):
            break
        time.sleep(0.5)
    assert {k: counts.get(k, 0) for k in wanted} == wanted, counts


def test_a_worker_on_postgres_and_redis_records_its_tasks(production_api: str, devnet: Any, tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client

    with LocalStore(tmp_path / "payloads") as store:
        fleet = Fleet(devnet, store, tmp_path, "prod")
        source = fleet.publish_source()
        fleet.create_pool("prod-pool", [source], wallet_block="prod-provider1")
        fleet.start_worker("prod-pool", "provider1")
        try:
            fleet.wait_registered(source, "provider1")
            tasks = [p.address for p in fleet.publish(source, [{"i": i} for i in range(5)])]
            fleet.wait_final(tasks)
            deadline = time.time() + 60
            while True:
                from .test_worker import flow_runs_of

                runs = flow_runs_of("prod-pool")
                if len([r for r in runs if r.state and r.state.is_completed()]) >= 5 or time.time() > deadline:
                    break
                time.sleep(0.5)
        finally:
            fleet.stop("provider1")
    assert fleet.chain.read_many([fleet.chain.task(t).read.get_status() for t in tasks]) == [TaskStatus.FINALIZED] * 5
    completed = [r for r in runs if r.state and r.state.is_completed()]
    assert len(completed) == 5, [(r.name, r.state) for r in runs]
    provider = devnet.address("provider1")
    with get_client(sync_client=True) as c:
        for run in completed:
            assert run.infrastructure_pid == f"{provider}:{run.parameters['task']}"
            kinds = [s.type.value for s in sorted(c.read_flow_run_states(run.id), key=lambda s: s.timestamp)]
            assert kinds[0] == "RUNNING" and kinds[-1] == "COMPLETED", kinds
            assert run.start_time is not None
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

        key = f"ogpu-provider-{provider.lower()[2:]}"
        [summary, *_] = c.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    assert "| answered | 5 |" in str(summary.data) and "earned **0.050000 OGPU**" in str(summary.data), summary.data
