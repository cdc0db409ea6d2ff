"""A provider account end to end with the local backend: standing on chain, the echo source (the
official ogpu.service API) run as a real process, tasks published by the client, executed over
real HTTP and answered on chain; earnings grow by exactly the payments."""

from __future__ import annotations

import time
from pathlib import Path

from ogpu_prefect.chain.connection import Chain
from ogpu_prefect.chain.types import Environment, TaskStatus
from ogpu_prefect.client import OGPUClient
from ogpu_prefect.models import SourceSpec, TaskInput
from ogpu_prefect.plugin_manager import PluginKind, create
from ogpu_prefect.plugins.first_response import FirstResponse
from ogpu_prefect.storage import LocalStore, fetch_json
from ogpu_prefect.worker.provider import Provider

ECHO = Path(__file__).resolve().parents[1] / "flows" / "sources" / "echo" / "docker-compose.cpu.yml"


def test_provider_executes_tasks_of_the_echo_source(devnet, tmp_path: Path) -> None:
    with LocalStore(tmp_path) as store:
        chain = Chain(devnet.network)
        client = OGPUClient(chain, devnet.key("client"), store)
        source = client.publish_source(
            SourceSpec(
                name="echo",
                cpu=f"file://{ECHO}",
                min_payment=10**15,
                min_available_lockup=10**18,
                delivery_method="FIRST_RESPONSE",
            )
        )
        lines: list[str] = []
        provider = Provider(
            Chain(devnet.network),
            devnet.key("provider3"),
            store,
            create(PluginKind.HARDWARE_BACKEND, "local"),
            Environment.CPU,
            service_log=lambda src, line: lines.append(line),
        )
        try:
            provider.ensure_standing([source])
            provider.ensure_standing([source])  # idempotent
            assert chain.source(source).get_registrant_id(provider.address) == 1
            earned0 = chain.vault.total_earnings_of(provider.address)
            start = chain.block_number() + 1
            published = client.publish_tasks(
                source,
                [TaskInput(function_name="echo", data={"text": f"t{i}"}) for i in range(5)],
                10**16,
                chain.now() + 300,
            )
            attempted = provider.attempt([p.address for p in published])
            assert attempted == [p.address for p in published]
            responses = [provider.execute(t) for t in attempted]
            tracked = client.wait_for(published, FirstResponse(), deadline=time.time() + 30, from_block=start)
        finally:
            provider.close()
    assert len(set(responses)) == 5
    assert all(chain.task(p.address).get_status() is TaskStatus.FINALIZED for p in published)
    results = [tracked[p.address].outcome.response.payload["result"] for p in published]
    assert [r["upper"] for r in results] == [f"T{i}" for i in range(5)]
    assert chain.vault.total_earnings_of(provider.address) - earned0 == 5 * 10**16
    assert any("echo: 1 field(s)" in line for line in lines), "service logs reach the provider's log"


def test_the_sentiment_source_scores_real_text(devnet, tmp_path: Path) -> None:
    compose = ECHO.parents[1] / "sentiment" / "docker-compose.cpu.yml"
    with LocalStore(tmp_path) as store:
        chain = Chain(devnet.network)
        client = OGPUClient(chain, devnet.key("client"), store)
        source = client.publish_source(
            SourceSpec(
                name="sentiment",
                cpu=f"file://{compose}",
                min_payment=10**15,
                min_available_lockup=10**18,
                delivery_method="FIRST_RESPONSE",
            )
        )
        provider = Provider(
            Chain(devnet.network), devnet.key("provider3"), store, create(PluginKind.HARDWARE_BACKEND, "local")
        )
        texts = [
            "I love this library, it is wonderful!",
            "This is the worst, most broken thing ever.",
            "The meeting is at noon.",
        ]
        try:
            provider.ensure_standing([source])
            published = client.publish_tasks(
                source, [TaskInput(function_name="analyze", data={"text": t}) for t in texts], 10**16, chain.now() + 120
            )
            tasks = provider.attempt([p.address for p in published])
            results = [fetch_json(provider.execute(t).data_url)["result"] for t in tasks]
        finally:
            provider.close()
    assert [r["label"] for r in results] == ["positive", "negative", "neutral"]
    assert results[0]["compound"] > 0.5 > -0.5 > results[1]["compound"]
