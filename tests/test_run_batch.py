"""run_batch end to end under Prefect's test harness, against the devnet, with stand-in providers
(tests/provider_sim.py: real transactions) serving the tasks: each delivery method completes a
50-task batch; artifacts and events are asserted; bad input loses nothing."""

from __future__ import annotations

import time

import pytest

from ogpu_prefect.chain.connection import Chain
from ogpu_prefect.chain.errors import (
    BalanceTooLowError,
    BudgetExceededError,
    ExpiryOutOfRangeError,
    InvalidInputError,
    PaymentOutOfRangeError,
    SourceNotActiveInputError,
    UnknownSourceInputError,
)
from ogpu_prefect.chain.types import DeliveryMethod
from ogpu_prefect.models import SourceSpec

from .provider_sim import SimProvider

pytestmark = pytest.mark.usefixtures("prefect_harness")
ETHER = 10**18


def make_source(env, method: DeliveryMethod, **spec) -> str:
    from ogpu_prefect.tasks import make_client

    devnet, network, wallet, storage, _ = env
    client = make_client(network, wallet, storage)
    return client.publish_source(
        SourceSpec(
            name="echo",
            cpu="http://127.0.0.1:9/compose.yml",
            min_payment=10**15,
            min_available_lockup=ETHER,
            max_expiry_duration=3600,
            delivery_method=method,
            **spec,
        )
    )


def start_providers(env, source: str, roles=("provider1",), **options) -> list[SimProvider]:
    devnet, network, *_, store = env
    chain = Chain(devnet.network)
    sims = []
    for role in roles:
        sender = chain.sender(devnet.key(role))
        sender.transact(chain.nexus.register(source, sender.address, 1))
        sims.append(
            SimProvider(
                devnet.network,
                devnet.key(role),
                [source],
                store,
                from_block=chain.block_number(),
                **options.get(role, {}),
            )
        )
    for s in sims:
        s.start()
    return sims


def artifacts_of(flow_run_id) -> dict[str, object]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as c:
        arts = c.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return {a.key or a.type: a for a in arts}


def run(env, source, inputs, **kwargs):
    from ogpu_prefect.flows.run_batch import run_batch

    _, network, wallet, storage, _ = env
    state = run_batch(
        source,
        inputs,
        kwargs.pop("payment", 10**16),
        network,
        wallet,
        storage,
        function_name="echo",
        return_state=True,
        **kwargs,
    )
    return state


@pytest.mark.parametrize(
    "delivery,method,options,roles",
    [
        ("first_response", DeliveryMethod.FIRST_RESPONSE, None, ("provider1", "provider2")),
        ("manual", DeliveryMethod.MANUAL_CONFIRMATION, {"policy": "first"}, ("provider1",)),
        (
            "manual",
            DeliveryMethod.MANUAL_CONFIRMATION,
            {"policy": "lowest_price", "window": 2},
            ("provider1", "provider2"),
        ),
        ("consensus", DeliveryMethod.MANUAL_CONFIRMATION, {"k": 2}, ("provider1", "provider2")),
        ("auction", DeliveryMethod.MANUAL_CONFIRMATION, {"window": 1.5}, ("provider1", "provider2")),
    ],
)
def test_a_50_task_batch_completes(env, delivery, method, options, roles, events_sink) -> None:
    devnet = env[0]
    chain = Chain(devnet.network)
    source = make_source(env, method)
    prices = {"provider1": {"price": lambda pay: pay}, "provider2": {"price": lambda pay: pay // 2}}
    sims = start_providers(env, source, roles, **prices)
    client_addr = devnet.address("client")
    balance0 = chain.vault.balance_of(client_addr)
    try:
        inputs = [{"n": i, "text": f"sentence {i}"} for i in range(50)]
        state = run(env, source, inputs, delivery=delivery, delivery_options=options, task_timeout=120)
        results = state.result()
    finally:
        for s in sims:
            s.stop()
    assert [r.index for r in results] == list(range(50))
    assert all(r.status == "finalized" for r in results), (
        [r for r in results if r.status != "finalized"][:3],
        [s.errors[:3] for s in sims],
    )
    assert [r.result["result"] for r in results] == inputs, "results come back in input order"
    if delivery in ("auction",) or options == {"policy": "lowest_price", "window": 2}:
        assert all(r.provider == devnet.address("provider2") for r in results), "the cheapest bid wins"
    spent = sum(r.payment for r in results)
    assert chain.vault.balance_of(client_addr) == balance0 - spent
    assert chain.vault.frozen_payment(client_addr) == 0, "no escrow left behind"
    arts = artifacts_of(state.state_details.flow_run_id)
    assert {"ogpu-batch-results", "ogpu-batch-cost", "progress"} <= set(arts) or "ogpu-batch-progress" in arts
    table = arts["ogpu-batch-results"]
    assert "finalized" in str(table.data)
    events = events_sink.events()
    names = [e.event for e in events]
    assert names.count("ogpu.task.finalized") == 50, "one event per task, at its end"
    assert not {"ogpu.task.published", "ogpu.task.attempted", "ogpu.task.responded"} & set(names), "no noise"
    assert names.count("ogpu.batch.started") == 1 and names.count("ogpu.batch.completed") == 1
    done = next(e for e in events if e.event == "ogpu.task.finalized")
    assert {"provider", "payment", "result_url", "latency_s", "response"} <= set(done.payload), done.payload
    related = {r.role: r.id for r in done.related}
    assert related["flow-run"] == f"prefect.flow-run.{state.state_details.flow_run_id}"
    assert done.resource.id.startswith(f"ogpu.{chain.network.chain_id}.task.")


def test_a_long_batch_shows_its_progress_every_few_seconds(env, events_sink) -> None:
    """A batch of ~25 s (a provider answering one task every 2 s): the progress artifact, read
    from the API while the batch runs, and the `ogpu.batch.progress` events move in steps, not
    only 0 then 100."""
    import threading

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    source = make_source(env, DeliveryMethod.FIRST_RESPONSE)
    sims = start_providers(env, source, ("provider1",), provider1={"delay": 2.0, "per_round": 1})
    seen: list[tuple[object, float]] = []  # (flow run, progress): earlier tests' batches use the key too
    stop = threading.Event()
    progress = ArtifactFilter(key=ArtifactFilterKey(any_=["ogpu-batch-progress"]))

    def watch() -> None:
        with get_client(sync_client=True) as c:
            while not stop.wait(1.0):
                seen.extend(
                    (a.flow_run_id, float(a.data)) for a in c.read_artifacts(artifact_filter=progress) if a.data
                )

    watcher = threading.Thread(target=watch, daemon=True)
    began = time.time()
    watcher.start()
    try:
        state = run(env, source, [{"i": i} for i in range(12)], task_timeout=120)
        results = state.result()
    finally:
        stop.set()
        watcher.join(timeout=30)
        for s in sims:
            s.stop()
    assert time.time() - began > 20, "the batch is long enough to need progress"
    assert [r.status for r in results] == ["finalized"] * 12
    ours = [v for run_id, v in seen if run_id == state.state_details.flow_run_id]
    between = sorted({v for v in ours if 0 < v < 100})
    assert len(between) >= 4, f"the artifact moves in steps while the batch runs: {sorted(set(ours))}"
    percents = [e.payload["percent"] for e in events_sink.events() if e.event == "ogpu.batch.progress"]
    assert len({p for p in percents if 0 < p < 100}) >= 4, percents
    assert percents == sorted(percents), "progress never goes back"


def test_expired_tasks_are_reclaimed_and_republished_once(env, events_sink) -> None:
    devnet = env[0]
    chain = Chain(devnet.network)
    source = make_source(env, DeliveryMethod.FIRST_RESPONSE)
    # The provider skips the first round entirely; it serves the re-published tasks.
    published_round: dict[str, int] = {}
    sims = start_providers(
        env,
        source,
        ("provider1",),
        provider1={"take": lambda t: published_round.setdefault(t, len(published_round)) >= 5},
    )
    balance0 = chain.vault.balance_of(devnet.address("client"))
    try:
        state = run(env, source, [{"i": i} for i in range(5)], task_timeout=15, max_republish=1)
        results = state.result()
    finally:
        for s in sims:
            s.stop()
    assert all(r.status == "finalized" for r in results), (results, sims[0].errors)
    assert all(len(r.tasks) == 2 and r.republished == 1 for r in results)
    assert len({t for r in results for t in r.tasks}) == 10, "never the same task twice"
    assert chain.vault.frozen_payment(devnet.address("client")) == 0, "expired escrow reclaimed"
    spent = sum(r.payment for r in results)
    assert chain.vault.balance_of(devnet.address("client")) == balance0 - spent
    failed = [e for e in events_sink.events() if e.event == "ogpu.task.failed"]
    assert len(failed) >= 5 and all(e.payload["reason"] == "expired" for e in failed)


def test_bad_input_gets_typed_errors_and_moves_no_wei(env) -> None:
    devnet = env[0]
    chain = Chain(devnet.network)
    source = make_source(env, DeliveryMethod.FIRST_RESPONSE)
    client_addr = devnet.address("client")
    balance0 = chain.vault.balance_of(client_addr)
    nonce0 = chain.rpc.call("eth_getTransactionCount", [client_addr, "latest"])
    cases = [
        (dict(payment=10**10), PaymentOutOfRangeError, "payment"),
        (dict(task_timeout=-100), ExpiryOutOfRangeError, "task_timeout"),
        (dict(task_timeout=10_000), ExpiryOutOfRangeError, "task_timeout"),
        (dict(payment=2000 * ETHER), BalanceTooLowError, "payment"),
        (dict(budget=10**16), BudgetExceededError, "budget"),
    ]
    for kwargs, error, field in cases:
        state = run(env, source, [{"i": 1}, {"i": 2}], max_republish=0, **kwargs)
        with pytest.raises(error) as info:
            state.result()
        assert info.value.field == field
    state = run(env, "0x000000000000000000000000000000000000dEaD", [{"i": 1}])
    with pytest.raises(UnknownSourceInputError):
        state.result()
    state = run(env, source, [{"ok": 1}, {"bad": {1, 2}}])
    with pytest.raises(InvalidInputError, match=r"inputs\[1\]"):
        state.result()
    # Over the payload limit (bigger than Prefect accepts as flow parameters, so straight to the client).
    from ogpu_prefect.models import TaskInput
    from ogpu_prefect.tasks import make_client

    _, network, wallet, storage, _ = env
    client = make_client(network, wallet, storage)
    with pytest.raises(InvalidInputError, match=r"inputs\[0\].*limit"):
        client.publish_tasks(source, [TaskInput(function_name="f", data="x" * 600_000)], 10**16, chain.now() + 60)
    assert chain.vault.balance_of(client_addr) == balance0, "no wei moved"
    assert chain.rpc.call("eth_getTransactionCount", [client_addr, "latest"]) == nonce0, "nothing was sent"
    client.inactivate_source(source)
    state = run(env, source, [{"i": 1}])
    with pytest.raises(SourceNotActiveInputError):
        state.result()


def test_scheduled_batch_processes_an_inbox_once(env, tmp_path) -> None:
    import json

    from ogpu_prefect.flows.scheduled_batch import scheduled_batch

    devnet, network, wallet, storage, _ = env
    source = make_source(env, DeliveryMethod.FIRST_RESPONSE)
    sims = start_providers(env, source, ("provider1",))
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "monday.json").write_text(json.dumps([{"text": "a"}, {"text": "b"}]))
    (inbox / "tuesday.json").write_text(json.dumps({"text": "c"}))
    (inbox / "wednesday.jsonl").write_text("".join(json.dumps({"line": i}) + "\n" for i in range(7)))
    try:
        written = scheduled_batch(
            f"file://{inbox}",
            source,
            10**16,
            network,
            wallet,
            storage,
            pattern="*.json*",
            function_name="echo",
            task_timeout=120,
            max_in_flight=3,
        )
        again = scheduled_batch(f"file://{inbox}", source, 10**16, network, wallet, storage, function_name="echo")
    finally:
        for s in sims:
            s.stop()
    assert again == {}, "a processed file is not processed again"
    assert sorted(p.name for p in (inbox / "done").iterdir()) == ["monday.json", "tuesday.json", "wednesday.jsonl"]
    monday = json.loads((inbox / "results" / "monday.results.json").read_text())
    assert [r["result"]["result"] for r in monday] == [{"text": "a"}, {"text": "b"}]
    assert all(r["status"] == "finalized" for r in monday)
    lines = [json.loads(x) for x in (inbox / "results" / "wednesday.results.jsonl").read_text().splitlines()]
    assert sorted(r["index"] for r in lines) == list(range(7)), "each line once, numbered within its file"
    assert all(r["result"]["result"] == {"line": r["index"]} for r in lines)
    assert len(written) == 3


def test_scheduled_batch_after_a_failure_resumes_the_same_files_without_paying_twice(env, tmp_path) -> None:
    """A run fails after its tasks are paid (the outbox cannot be written) and leaves the files in
    the inbox: the next run of the same files is the same batch and publishes nothing more (the
    batch key was the flow run id: the next run paid for every input again)."""
    import json

    from ogpu_prefect.flows.scheduled_batch import scheduled_batch
    from ogpu_prefect.reconcile import find_published

    devnet, network, wallet, storage, _ = env
    chain = Chain(devnet.network)
    source = make_source(env, DeliveryMethod.FIRST_RESPONSE)
    start = chain.block_number() + 1
    sims = start_providers(env, source, ("provider1",))
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "batch.json").write_text(json.dumps([{"text": str(i)} for i in range(6)]))
    (tmp_path / "not-a-folder").write_text("")
    args = (f"file://{inbox}", source, 10**16, network, wallet, storage)
    try:
        failed = scheduled_batch(
            *args, outbox=f"file://{tmp_path / 'not-a-folder'}", function_name="echo", return_state=True
        )
        assert failed.is_failed(), failed
        assert (inbox / "batch.json").exists(), "a failed run leaves its files in the inbox"
        written = scheduled_batch(*args, function_name="echo")
    finally:
        for s in sims:
            s.stop()
    found = find_published(chain, devnet.address("client"), source, start)
    assert sum(len(ts) for ts in found.values()) == 6, "each input published once over both runs"
    rows = json.loads((inbox / "results" / "batch.results.json").read_text())
    assert [r["status"] for r in rows] == ["finalized"] * 6 and len(written) == 1


def test_scheduled_batch_deploys_on_a_cron() -> None:
    from ogpu_prefect.flows.scheduled_batch import scheduled_batch

    deployment = scheduled_batch.to_deployment(
        name="nightly",
        cron="0 2 * * *",
        parameters={
            "inbox": "file:///tmp/inbox",
            "source": "0x" + "11" * 20,
            "payment": 10**16,
            "network": "devnet",
            "wallet": "client",
            "storage": "payloads",
        },
    )
    assert deployment.schedules[0].schedule.cron == "0 2 * * *"
    assert deployment.parameters["wallet"] == "client", "blocks travel by name, never a key"


def test_no_private_key_in_logs_artifacts_parameters_or_results(env, caplog) -> None:
    """A whole batch, then every place Prefect stores text about it is searched for the key."""
    from prefect.client.orchestration import get_client

    devnet = env[0]
    key = devnet.key("client")
    source = make_source(env, DeliveryMethod.FIRST_RESPONSE)
    sims = start_providers(env, source, ("provider1",))
    try:
        state = run(env, source, [{"i": i} for i in range(3)], task_timeout=60)
        results = state.result()
    finally:
        for s in sims:
            s.stop()
    flow_run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as c:
        from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

        logs = c.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
        run_info = c.read_flow_run(flow_run_id)
    texts = [
        str(results),
        str(run_info.parameters),
        caplog.text,
        *[lg.message for lg in logs],
        *[str(a.data) for a in artifacts_of(flow_run_id).values()],
    ]
    for text in texts:
        assert key[2:].lower() not in text.lower()
    assert "**********" in str(run_info.parameters["wallet"]), "the wallet's key is stored masked"
