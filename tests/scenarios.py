"""The money-safety scenarios of bench/reliability.py, shared with tests/test_reliability.py (which
runs them smaller). Each runs against a real devnet and a real Prefect API, with stand-in
providers (tests/provider_sim.py) sending real transactions, and returns an `Outcome` audited
from the chain: tasks expected and on chain, configs published twice, escrow stranded (held by a
task the run neither finalized, cancelled nor reclaimed, nor reported as waiting for the
network's expiry handling), and private keys found in any text or pickle.

What is simulated, and why: a failure after publishing in `retry` (a task of the flow raises
once: the cause does not matter, only that the flow fails after its first transactions);
everything else is real (processes killed, RPC outages through a proxy, storage outages in an
IPFS stand-in, hostile providers on chain)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ogpu_prefect.blocks import OGPUNetwork, OGPUStorage, OGPUWallet
from ogpu_prefect.chain.connection import Chain
from ogpu_prefect.chain.devnet import Devnet
from ogpu_prefect.chain.types import DeliveryMethod, TaskStatus
from ogpu_prefect.models import SourceSpec
from ogpu_prefect.reconcile import find_published
from ogpu_prefect.storage import LocalStore

from .provider_sim import SimProvider

ETHER = 10**18
PAYMENT = 10**16
REPO = Path(__file__).resolve().parents[1]


@dataclass
class Outcome:
    name: str
    expected: int
    on_chain: int = 0
    duplicates: int = 0
    stranded_wei: int = 0
    leaked_keys: int = 0
    detail: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return (
            not self.problems
            and self.duplicates == 0
            and self.stranded_wei == 0
            and self.leaked_keys == 0
            and self.on_chain == self.expected
        )


@dataclass
class Ctx:
    """One scenario's world: the devnet, its payload store, and blocks for the client."""

    devnet: Devnet
    store: LocalStore
    workdir: Path
    rpc_url: str = ""
    client_role: str = "client"  # the devnet account the client's wallet is

    def __post_init__(self) -> None:
        from datetime import UTC, datetime

        self.rpc_url = self.rpc_url or self.devnet.rpc_url
        self.chain = Chain(self.devnet.network)
        self.started = datetime.now(UTC)  # the leak audit reads what the API got since

    def network(self, rpc_url: str | None = None) -> OGPUNetwork:
        return OGPUNetwork.from_network(self.devnet.network.with_rpc(rpc_url or self.rpc_url))

    def wallet(self, role: str | None = None) -> OGPUWallet:
        return OGPUWallet(private_key=self.devnet.key(role or self.client_role))

    def storage(self) -> OGPUStorage:
        return OGPUStorage(write_url=f"file://{self.store.root.resolve()}", read_url=self.store.base_url)

    def client(self) -> Any:
        from ogpu_prefect.tasks import make_client

        return make_client(self.network(), self.wallet(), self.storage())

    def source(self, method: DeliveryMethod = DeliveryMethod.FIRST_RESPONSE) -> str:
        return self.client().publish_source(
            SourceSpec(
                name="echo",
                cpu="http://127.0.0.1:9/compose.yml",
                min_payment=10**15,
                min_available_lockup=ETHER,
                max_expiry_duration=3600,
                delivery_method=method,
            )
        )

    @contextmanager
    def providers(
        self, source: str, roles: tuple[str, ...] = ("provider1",), *, from_block: int | None = None, **options: Any
    ) -> Iterator[list[Any]]:
        """Stand-in providers serving `source`: tasks published from `from_block` (default: now)."""
        sims = []
        for role in roles:
            sender = self.chain.sender(self.devnet.key(role))
            sender.transact(self.chain.nexus.register(source, sender.address, 1))
            sims.append(
                SimProvider(
                    self.devnet.network,
                    self.devnet.key(role),
                    [source],
                    self.store,
                    from_block=self.chain.block_number() if from_block is None else from_block,
                    **options.get(role, {}),
                )
            )
        for s in sims:
            s.start()
        try:
            yield sims
        finally:
            for s in sims:
                s.stop()


def audit(ctx: Ctx, outcome: Outcome, source: str, from_block: int, reported: set[str] | None = None) -> Outcome:
    """Fills `outcome` from the chain (the client's tasks on `source` since `from_block`) and
    counts the keys leaked anywhere (`count_leaks`)."""
    outcome.leaked_keys += count_leaks(ctx, [outcome.detail, *outcome.problems])
    client = ctx.devnet.address(ctx.client_role)
    found = find_published(ctx.chain, client, source, from_block)
    tasks = [t for ts in found.values() for t in ts]
    outcome.on_chain = len(tasks)
    outcome.duplicates = sum(len(ts) - 1 for ts in found.values())
    statuses = ctx.chain.read_many([ctx.chain.task(t.address).read.get_status() for t in tasks])
    reported = {r.lower() for r in (reported or set())}
    for t, s in zip(tasks, statuses):
        if (
            TaskStatus(s) in (TaskStatus.NEW, TaskStatus.ATTEMPTED, TaskStatus.RESPONDED)
            and t.address.lower() not in reported
        ):
            outcome.stranded_wei += t.payment
    return outcome


def keys_in_use(ctx: Ctx) -> list[bytes]:
    """Every devnet account's key (the client's, the providers', the deployer's), as raw bytes."""
    return [bytes.fromhex(a["private_key"].removeprefix("0x")) for a in ctx.devnet.profile["accounts"].values()]


def count_leaks(ctx: Ctx, texts: Any = ()) -> int:
    """Occurrences of a key in use, in any form (any case, with or without 0x: each text is
    searched lower-cased for its hex; files also for its raw bytes), in `texts` (the scenario's
    errors), in what the Prefect API got since the scenario began (flow-run parameters and state
    messages, task-run state messages, logs, artifacts, variables, events), in the payload store
    (published configs, responses), the scenario's files (checkpoints, results) and Prefect's
    local result storage (pickles)."""
    keys = keys_in_use(ctx)
    hexes = [k.hex() for k in keys]
    found = sum(str(t).lower().count(h) for t in texts for h in hexes)
    found += sum(t.lower().count(h) for t in prefect_texts(ctx.started) for h in hexes)
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH

    for root in (ctx.workdir, ctx.store.root, Path(PREFECT_LOCAL_STORAGE_PATH.value())):
        for path in Path(root).rglob("*") if Path(root).exists() else []:
            try:
                if not path.is_file() or path.stat().st_mtime < ctx.started.timestamp() - 1:
                    continue
                data = path.read_bytes()
            except OSError:
                continue  # removed meanwhile
            lower = data.lower()
            found += sum(lower.count(h.encode()) + data.count(k) for k, h in zip(keys, hexes))
    return found


def prefect_texts(since: Any) -> Iterator[str]:
    """Every text the Prefect API holds from `since` on."""
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.client.schemas import filters as f
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    page = 200
    with get_client(sync_client=True) as c:
        runs = []
        while len(runs) % page == 0:
            more = c.read_flow_runs(
                flow_run_filter=f.FlowRunFilter(expected_start_time=f.FlowRunFilterExpectedStartTime(after_=since)),
                limit=page,
                offset=len(runs),
            )
            runs += more
            if not more:
                break
        for run in runs:
            yield json.dumps(run.parameters, default=str)
            yield str(run.state.message if run.state else "")
        ids = [r.id for r in runs]
        done = 0
        while ids:
            task_runs = c.read_task_runs(
                task_run_filter=f.TaskRunFilter(flow_run_id=f.TaskRunFilterFlowRunId(any_=ids)),
                limit=page,
                offset=done,
            )
            yield from (str(t.state.message if t.state else "") for t in task_runs)
            done += len(task_runs)
            if len(task_runs) < page:
                break
        done = 0
        while True:
            logs = c.read_logs(f.LogFilter(timestamp=f.LogFilterTimestamp(after_=since)), limit=page, offset=done)
            yield from (log.message for log in logs)
            done += len(logs)
            if len(logs) < page:
                break
        for artifact in (
            c.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=ids)))
            if ids
            else []
        ):
            yield json.dumps([artifact.data, artifact.description, artifact.key], default=str)
        for variable in c.read_variables():
            yield json.dumps([variable.name, variable.value, variable.tags], default=str)
        api = str(c.api_url).rstrip("/")
    body = {"filter": {"occurred": {"since": since.isoformat()}}, "limit": 50}
    reply = httpx.post(f"{api}/events/filter", json=body, timeout=30).json()
    for _ in range(100):  # pages of 50 events
        yield json.dumps(reply.get("events", []))
        if not reply.get("next_page"):
            break
        reply = httpx.get(reply["next_page"], timeout=30).json()


def run_flow(
    ctx: Ctx, source: str, n: int, *, rpc_url: str | None = None, flow: Any = None, storage: Any = None, **kwargs: Any
) -> Any:
    from ogpu_prefect.flows.run_batch import run_batch

    kwargs.setdefault("function_name", "echo")
    kwargs.setdefault("task_timeout", 120)
    # Every scenario runs inputs {"i": 0..n-1} on one devnet reverted between scenarios (the same
    # network, often the same source address): the result cache would answer a later scenario
    # from an earlier one's results and publish nothing. The scenarios are about publishing.
    kwargs.setdefault("cache", False)
    return (flow or run_batch)(
        source,
        [{"i": i} for i in range(n)],
        kwargs.pop("payment", PAYMENT),
        ctx.network(rpc_url),
        ctx.wallet(),
        storage or ctx.storage(),
        return_state=True,
        **kwargs,
    )


def reported_waiting(results: Any) -> set[str]:
    return {t for r in results for t in r.open_escrow}


def finalized(outcome: Outcome, results: list[Any], n: int) -> None:
    done = sum(1 for r in results if r.status == "finalized")
    if done != n:
        outcome.problems.append(f"{done}/{n} finalized: {[r for r in results if r.status != 'finalized'][:2]}")


# ---- the scenarios ----


def retry_after_publish(ctx: Ctx, n: int) -> Outcome:
    """A Prefect retry of run_batch after a failure that came after publishing: nothing twice."""
    import ogpu_prefect.flows.run_batch as module

    outcome, source = Outcome("retry after a failure", n), ctx.source()
    start = ctx.chain.block_number() + 1
    original, calls = module.wait_for_results, []

    def fails_once(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("simulated failure after publishing")
        return original(*args, **kwargs)

    module.wait_for_results = fails_once  # type: ignore[assignment]
    try:
        with ctx.providers(source):
            state = run_flow(ctx, source, n, flow=module.run_batch.with_options(retries=1, retry_delay_seconds=0))
            results = state.result()
    finally:
        module.wait_for_results = original  # type: ignore[assignment]
    finalized(outcome, results, n)
    return audit(ctx, outcome, source, start)


def rerun_same_key(ctx: Ctx, n: int) -> Outcome:
    """A new run with the batch_key of a finished one publishes nothing and returns its results."""
    outcome, source = Outcome("re-run by batch_key", n), ctx.source()
    start = ctx.chain.block_number() + 1
    with ctx.providers(source):
        first = run_flow(ctx, source, n, batch_key=f"rerun-{start}").result()
        again = run_flow(ctx, source, n, batch_key=f"rerun-{start}").result()
    finalized(outcome, again, n)
    if [r.task for r in first] != [r.task for r in again]:
        outcome.problems.append("the re-run did not find the same tasks")
    return audit(ctx, outcome, source, start)


def crash_and_rerun(ctx: Ctx, n: int, api_url: str) -> Outcome:
    """The client process is killed (SIGKILL) while publishing; a run with the same batch_key
    publishes only what is missing."""
    outcome, source = Outcome("killed mid-publish, re-run", n), ctx.source()
    start = ctx.chain.block_number() + 1
    key = f"crash-{start}"
    names = save_blocks(ctx, f"crash{start}")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.batch_proc", source, str(n), key, *names],
        cwd=REPO,
        env={**os.environ, "PREFECT_API_URL": api_url},
        start_new_session=True,
    )
    try:
        deadline = time.time() + 120
        while ctx.chain.source(source).get_task_count() == 0 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.005)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    killed_at = ctx.chain.source(source).get_task_count()
    with ctx.providers(source, from_block=start):
        results = run_flow(ctx, source, n, batch_key=key).result()
    finalized(outcome, results, n)
    outcome.detail = f"{killed_at} task(s) on chain when killed"
    return audit(ctx, outcome, source, start)


def stream_crash_and_resume(ctx: Ctx, n: int, api_url: str) -> Outcome:
    """stream_batch's process is killed (SIGKILL) mid-stream, results written and tasks in flight;
    a run with the same batch_key resumes it: every input's result once, nothing published twice."""
    from ogpu_prefect.flows.stream_batch import stream_batch
    from ogpu_prefect.stream_io import read_results

    outcome, source = Outcome("stream killed mid-run, resumed", n), ctx.source()
    start = ctx.chain.block_number() + 1
    key = f"stream-crash-{start}"
    names = save_blocks(ctx, f"scrash{start}")
    with ctx.providers(source, from_block=start):
        proc = _batch_process(source, n, key, names, api_url, "stream")
        try:
            deadline = time.time() + 120
            while ctx.chain.source(source).get_task_count() < n // 2 and time.time() < deadline and proc.poll() is None:
                time.sleep(0.01)
            os.killpg(proc.pid, signal.SIGKILL)
        finally:
            proc.wait()
        killed_at = ctx.chain.source(source).get_task_count()
        state = stream_batch(
            source,
            [{"i": i} for i in range(n)],
            PAYMENT,
            ctx.network(),
            ctx.wallet(),
            ctx.storage(),
            function_name="echo",
            task_timeout=120,
            batch_key=key,
            max_in_flight=10,
            return_state=True,
            cache=False,
        )
        summary = state.result()
    ends = sorted(r["index"] for r in read_results(summary.results_url))
    if ends != list(range(n)):
        outcome.problems.append(f"results are not each input once: {len(ends)} lines, {len(set(ends))} inputs")
    if summary.counts != {"finalized": n}:
        outcome.problems.append(f"counts {summary.counts}")
    outcome.detail = f"{killed_at} task(s) on chain when killed"
    return audit(ctx, outcome, source, start)


def same_key_at_once(ctx: Ctx, n: int, api_url: str, mode: str = "run") -> Outcome:
    """Two processes start the same batch_key at the same moment (a deployment triggered twice):
    one runs it, the other waits and then publishes nothing more."""
    outcome, source = Outcome(f"one batch_key run twice at once ({mode})", n), ctx.source()
    start = ctx.chain.block_number() + 1
    key = f"twice-{mode}-{start}"
    names = save_blocks(ctx, f"twice{start}")
    with ctx.providers(source, from_block=start):
        procs = [_batch_process(source, n, key, names, api_url, mode, capture=True) for _ in range(2)]
        for p in procs:
            out = p.communicate(timeout=600)[0].decode(errors="replace")
            if p.returncode != 0:
                outcome.problems.append(f"a run failed: {out[-400:]}")
    return audit(ctx, outcome, source, start)


def conflict_leaves_holder(ctx: Ctx, n: int, api_url: str) -> Outcome:
    """A second run of a live batch's key gives up waiting for it (BatchKeyConflictError): its
    failure hook must leave the live run's tasks alone (it once cancelled every one still NEW),
    and the live run completes every input once."""
    outcome, source = Outcome("a conflicting run leaves the live one alone", n), ctx.source()
    start = ctx.chain.block_number() + 1
    key = f"conflict-{start}"
    names = save_blocks(ctx, f"conflict{start}")
    live = _batch_process(source, n, key, names, api_url, "run", capture=True)
    try:
        deadline = time.time() + 120
        while ctx.chain.source(source).get_task_count() < n and time.time() < deadline and live.poll() is None:
            time.sleep(0.05)
        second = _batch_process(
            source, n, key, names, api_url, "run", capture=True, PREFECT_INTEGRATIONS_OGPU_BATCH_LEASE_WAIT_S="2"
        )
        out = second.communicate(timeout=300)[0].decode(errors="replace")
        if second.returncode == 0 or "BatchKeyConflictError" not in out:
            outcome.problems.append(f"the second run did not stop on the conflict: {out[-400:]}")
        with ctx.providers(source, from_block=start):
            out = live.communicate(timeout=600)[0].decode(errors="replace")
        if live.returncode != 0:
            outcome.problems.append(f"the live run failed: {out[-400:]}")
    finally:
        if live.poll() is None:
            os.killpg(live.pid, signal.SIGKILL)
            live.wait()
    tasks = [t for ts in find_published(ctx.chain, ctx.devnet.address("client"), source, start).values() for t in ts]
    statuses = ctx.chain.read_many([ctx.chain.task(t.address).read.get_status() for t in tasks])
    cancelled = sum(1 for s in statuses if TaskStatus(s) is TaskStatus.CANCELED)
    if cancelled:
        outcome.problems.append(f"{cancelled} of the live run's tasks were cancelled by the other run's hook")
    return audit(ctx, outcome, source, start)


def _batch_process(
    source: str,
    n: int,
    key: str,
    names: tuple[str, str, str],
    api_url: str,
    mode: str,
    capture: bool = False,
    **env: str,
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.batch_proc", source, str(n), key, *names, mode],
        cwd=REPO,
        env={**os.environ, "PREFECT_API_URL": api_url, **env},
        start_new_session=True,
        stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.STDOUT if capture else None,
    )


def save_blocks(ctx: Ctx, prefix: str) -> tuple[str, str, str]:
    names = (f"{prefix}-net", f"{prefix}-wallet", f"{prefix}-store")
    ctx.network().save(names[0], overwrite=True)
    ctx.wallet().save(names[1], overwrite=True)
    ctx.storage().save(names[2], overwrite=True)
    return names


def storage_outage_mid_publish(ctx: Ctx, n: int) -> Outcome:
    """The payload storage goes down mid-batch (after half the configs): what landed is
    cancelled by the flow's failure hook; the run fails with a typed error."""
    from .ipfs_stub import IpfsStub

    outcome, source = Outcome("storage outage mid-publish", 0), ctx.source()
    start = ctx.chain.block_number() + 1
    with IpfsStub(fail_after=n // 2) as stub:
        storage = OGPUStorage(kind="ipfs", ipfs_api_url=f"{stub.url}/file/create", result_origins=[f"{stub.url}/ipfs/"])
        state = run_flow(ctx, source, n, storage=storage)
    if not state.is_failed():
        outcome.problems.append(f"the run did not fail: {state}")
    audit(ctx, outcome, source, start)
    outcome.detail = f"{outcome.on_chain} task(s) published before the outage, all cancelled"
    outcome.expected = outcome.on_chain  # whatever landed must be settled, not stranded
    return outcome


def wallet_shared_by_processes(ctx: Ctx, processes: int, n: int) -> Outcome:
    """`processes` processes publish with one key at once: every task lands once."""
    outcome, source = Outcome(f"{processes} processes, one wallet", processes * n), ctx.source()
    start = ctx.chain.block_number() + 1
    store = str(ctx.store.root.resolve())
    # The devnet profile (every account's key, by design) is the publishers' input, not something
    # the code under test wrote: it lives outside the folder the leak audit searches.
    keep = tempfile.TemporaryDirectory()
    profile = Path(keep.name) / "profile.json"
    profile.write_text(json.dumps(ctx.devnet.profile))
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.publisher_proc",
                str(profile),
                ctx.devnet.key("client"),
                source,
                str(n),
                f"p{k}",
                store,
                ctx.store.base_url,
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for k in range(processes)
    ]
    for p in procs:
        out = p.communicate(timeout=600)[0].decode()
        if p.returncode != 0:
            outcome.problems.append(f"a publisher failed: {out[-1500:]}")
    keep.cleanup()
    # Nothing waits for these tasks: they are cancelled (what an unserved batch's settling does).
    found = find_published(ctx.chain, ctx.devnet.address("client"), source, start)
    ctx.client().cancel_tasks([t.address for ts in found.values() for t in ts])
    return audit(ctx, outcome, source, start)


def rpc_outage(ctx: Ctx, n: int, seconds: float, during: str) -> Outcome:
    """The node is unreachable for `seconds` from the batch's first broadcast (`during` publish)
    or from its first wait poll (`during` wait): the batch pauses and resumes."""
    from .faultproxy import FaultProxy, Faults

    outcome, source = Outcome(f"{seconds:.0f} s RPC outage in {during}", n), ctx.source()
    start = ctx.chain.block_number() + 1
    marker = b"eth_sendRawTransaction" if during == "publish" else b'"0x88c89788'  # Attempted: the wait's cursor
    with FaultProxy(ctx.devnet.rpc_url, Faults(drop_request=0, drop_reply=0, delay=0)) as proxy:
        proxy.outage_when(lambda body: marker in body, seconds)
        with ctx.providers(source):
            results = run_flow(ctx, source, n, rpc_url=proxy.url).result()
        outcome.detail = (
            f"outages: {proxy.faults.counts.get('outages', 0)}, dropped: {proxy.faults.counts.get('outage', 0)}"
        )
    finalized(outcome, results, n)
    return audit(ctx, outcome, source, start)


def hostile_response_urls(ctx: Ctx, n: int) -> Outcome:
    """A provider answers first with URLs to a loopback-only server and to a local file: never
    fetched, never accepted; the honest provider's results are confirmed."""
    from .evil_server import EvilServer

    outcome, source = Outcome("hostile response URLs", n), ctx.source(DeliveryMethod.MANUAL_CONFIRMATION)
    start = ctx.chain.block_number() + 1
    with EvilServer() as evil:
        urls = [f"{evil.url}/secret.json", "file:///etc/hostname", f"{ctx.store.base_url}@{evil.url[7:]}/x.json"]
        # Each its own URL: the Nexus refuses a response URL another response used.
        hostile = {"response_url": lambda task, url: f"{urls[int(task, 16) % len(urls)]}?task={task}"}
        with ctx.providers(source, ("provider2", "provider1"), provider1={"delay": 0.5}, provider2=hostile):
            results = run_flow(ctx, source, n, delivery="manual", delivery_options={"policy": "first"}).result()
        if evil.hits:
            outcome.problems.append(f"the client fetched the hostile server {evil.hits} time(s)")
    finalized(outcome, results, n)
    honest = ctx.devnet.address("provider1")
    if any(r.provider != honest for r in results):
        outcome.problems.append("a hostile response was accepted")
    return audit(ctx, outcome, source, start)


def key_in_wrong_fields(ctx: Ctx) -> Outcome:
    """A private key where a block name, an address or data belongs: a typed error naming the
    field; the key in no exception text, stored flow-run parameter, state message, log or pickle."""
    import cloudpickle
    from prefect.client.orchestration import get_client

    key = ctx.devnet.key("client")
    outcome, source = Outcome("key in the wrong field", 0), ctx.source()
    texts: list[str] = []
    bare = key.removeprefix("0x")
    # the key as people paste it: exact, quoted, a .env line, 0X, a trailing comma, upper case, bare
    forms = [key, f'"{key}"', f"PRIVATE_KEY={key}", "0X" + bare, key + ",", key.upper(), bare]
    cases = [
        (field_name, kwargs)
        for form in forms
        for field_name, kwargs in [
            ("wallet", {"wallet": form}),
            ("network", {"network": form}),
            ("storage", {"storage": form}),
            ("source", {"source": form}),
            ("inputs[1]", {"inputs": [{"i": 0}, form]}),
            ("batch_key", {"batch_key": form}),
            ("function_name", {"function_name": form}),
        ]
    ]
    for field_name, kwargs in cases:
        state = _run_with(ctx, source, **kwargs)
        try:
            state.result()
            outcome.problems.append(f"{field_name}: accepted")
        except Exception as e:
            texts.append(str(e) + repr(e))
            if getattr(e, "field", None) != field_name:
                outcome.problems.append(f"{field_name}: {type(e).__name__} names {getattr(e, 'field', None)!r}")
        with get_client(sync_client=True) as c:
            run = c.read_flow_run(state.state_details.flow_run_id)
            texts += [repr(run.parameters), str(run.state.message if run.state else "")]
            texts += [log.message for log in c.read_logs(log_filter=_logs_of(run.id))]
    wallet = ctx.wallet()
    try:
        texts.append(cloudpickle.dumps(wallet).hex())
    except TypeError:
        pass  # an unsaved wallet refuses to be pickled
    saved = ctx.wallet()
    saved.save("pickled-wallet", overwrite=True)
    texts.append(cloudpickle.dumps(OGPUWallet.load("pickled-wallet")).hex())
    outcome.leaked_keys = count_leaks(ctx, texts)
    return outcome


def _run_with(ctx: Ctx, default_source: str, **override: Any) -> Any:
    from ogpu_prefect.flows.run_batch import run_batch

    args = {
        "source": default_source,
        "inputs": [{"i": 0}, {"i": 1}],
        "payment": PAYMENT,
        "network": ctx.network(),
        "wallet": ctx.wallet(),
        "storage": ctx.storage(),
        "function_name": "echo",
        "cache": False,  # as run_flow
    }
    args.update(override)
    return run_batch(**args, return_state=True)


def _logs_of(run_id: Any) -> Any:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    return LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id]))


def abi_firewall(ctx: Ctx, n: int) -> Outcome:
    """The lifecycle and run_batch with every delivery method through a proxy that refuses every
    call the real network's ABIs do not have."""
    from .abi_firewall import AbiFirewall

    outcome = Outcome("real network's ABI only", 0)
    start = ctx.chain.block_number() + 1
    with AbiFirewall(ctx.devnet.rpc_url, singletons=ctx.devnet.contracts) as firewall:
        for delivery, method, options in [
            ("first_response", DeliveryMethod.FIRST_RESPONSE, None),
            ("manual", DeliveryMethod.MANUAL_CONFIRMATION, {"policy": "first"}),
            ("consensus", DeliveryMethod.MANUAL_CONFIRMATION, {"k": 2}),
            ("auction", DeliveryMethod.MANUAL_CONFIRMATION, {"window": 1}),
        ]:
            source = ctx.source(method)
            with ctx.providers(source, ("provider1", "provider2")):
                results = run_flow(
                    ctx, source, n, rpc_url=firewall.url, delivery=delivery, delivery_options=options
                ).result()
            finalized(outcome, results, n)
            audit(ctx, part := Outcome(delivery, n), source, start)
            outcome.expected += n
            outcome.on_chain += part.on_chain
            outcome.duplicates += part.duplicates
            outcome.stranded_wei += part.stranded_wei
            outcome.leaked_keys = max(outcome.leaked_keys, part.leaked_keys)  # each part audits it all
        if firewall.refused:
            outcome.problems.append(f"refused: {firewall.refused[:3]}")
        outcome.detail = f"{firewall.allowed_count} calls allowed, {len(firewall.refused)} refused"
    return outcome


def deadline_before_expiry(ctx: Ctx, n: int) -> Outcome:
    """batch_deadline shorter than task_timeout, nobody serving: the tasks are cancelled at the
    deadline, not left on chain."""
    outcome, source = Outcome("deadline before the tasks' expiry", n), ctx.source()
    start = ctx.chain.block_number() + 1
    results = run_flow(ctx, source, n, task_timeout=600, batch_deadline=25, max_republish=0).result()
    if any(r.status == "finalized" for r in results):
        outcome.problems.append("finalized without a provider?")
    return audit(ctx, outcome, source, start, reported_waiting(results))


def legacy_gas_chain(ctx: Ctx, n: int) -> Outcome:
    """A chain whose blocks carry no base fee (anvil --hardfork berlin): legacy transactions."""
    outcome, source = Outcome("legacy-gas chain (berlin)", n), ctx.source()
    start = ctx.chain.block_number() + 1
    with ctx.providers(source):
        results = run_flow(ctx, source, n).result()
    finalized(outcome, results, n)
    # Every transaction since `start` (some blocks are empty: the sender mines one when anvil's
    # queue stalls) must be legacy (type 0).
    blocks = [
        ctx.chain.rpc.call("eth_getBlockByNumber", [hex(b), True]) for b in range(start, ctx.chain.block_number() + 1)
    ]
    types = {int(tx.get("type", "0x0"), 16) for b in blocks for tx in b["transactions"]}
    if not types or types != {0}:
        outcome.problems.append(f"transaction types {sorted(types)} on a legacy chain")
    return audit(ctx, outcome, source, start)


SCENARIOS: dict[str, Callable[..., Outcome]] = {
    "retry": retry_after_publish,
    "rerun": rerun_same_key,
    "crash": crash_and_rerun,
    "stream_crash": stream_crash_and_resume,
    "same_key_at_once": same_key_at_once,
    "conflict_leaves_holder": conflict_leaves_holder,
    "storage_outage": storage_outage_mid_publish,
    "shared_wallet": wallet_shared_by_processes,
    "rpc_outage": rpc_outage,
    "hostile_urls": hostile_response_urls,
    "keys": key_in_wrong_fields,
    "abi_firewall": abi_firewall,
    "deadline": deadline_before_expiry,
    "legacy_gas": legacy_gas_chain,
}


def watchdog(seconds: float) -> threading.Timer:
    """Prints where every thread is if a scenario hangs (the bench's own timeout follows)."""
    import faulthandler

    timer = threading.Timer(seconds, faulthandler.dump_traceback)
    timer.daemon = True
    timer.start()
    return timer
