"""The main job, end to end on the embedded default: a devnet, a local Prefect server (SQLite), an
`ogpu-provider` work pool with two provider workers (local backend; plus the docker backend's
environments reported when an engine is up), the sentiment source published, and `run_batch` over
the bundled sentences. Prints the results table, the cost and the Prefect UI's URL. Ctrl-C or the
end stops everything it started; `--keep` leaves it running for exploring the UI.

    ogpu-prefect demo [--tasks N] [--keep]
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .chain import devnet
from .chain.connection import Chain
from .prefect_api import use_server
from .settings import get_settings

# The repository's flows/ folder, packaged as ogpu_prefect.flows (found, not imported: the wheel has it
# inside the package, an editable install maps it to the repository's folder).
FLOWS = Path(next(iter(importlib.util.find_spec("ogpu_prefect.flows").submodule_search_locations)))
SENTENCES = FLOWS / "data" / "sentences.txt"
SENTIMENT = FLOWS / "sources" / "sentiment" / "docker-compose.cpu.yml"
POOL = "ogpu-demo"
PROVIDERS = ("provider1", "provider2")
PAYMENT = 10**16  # 0.01 OGPU per task
CHUNK = 10  # sentences per task (`analyze_batch`): fewer, larger tasks keep per-task overhead small
# The blocks the demo saves: named so that none is taken for a CLI keyword (devnet, mainnet, testnet).
NETWORK_BLOCK = "demo-chain"
STORAGE_BLOCK = "demo-payloads"


def wallet_block(role: str) -> str:
    """The demo's wallet block of a devnet role (`demo-client`, `demo-provider1`, ...)."""
    return f"demo-{role}"


class Demo:
    def __init__(self, say: Callable[[str], None], home: Path) -> None:
        self.say = say
        self.home = home
        self.procs: list[subprocess.Popen[bytes]] = []
        self.net: devnet.Devnet | None = None
        self.store: Any = None
        self.stack: Any = None
        self.api_url = ""

    # ---- bring-up ----

    def start_prefect(self) -> None:
        """A Prefect server of the demo's own (the sqlite stack under its home): the demo talks to
        it and to nothing else, whatever the user's environment or profile points at."""
        from .stack import PrefectStack

        self.stack = PrefectStack(self.home, stack="sqlite", timeout=300)
        self.api_url = self.stack.start().api_url

    def prefect_env(self, **more: str) -> dict[str, str]:
        """The explicit environment of a process the demo starts: its server, its Prefect home."""
        from .prefect_api import server_env

        return {**server_env(self.api_url, self.home / "prefect"), **more}

    def save_blocks(self) -> None:
        from .blocks import OGPUNetwork, OGPUStorage, OGPUWallet
        from .storage import LocalStore

        assert self.net is not None
        self.store = LocalStore(self.home / "payloads").__enter__()
        OGPUNetwork.from_network(self.net.network).save(NETWORK_BLOCK, overwrite=True)
        OGPUStorage(write_url=f"file://{self.store.root.resolve()}", read_url=self.store.base_url).save(
            STORAGE_BLOCK, overwrite=True
        )
        for role in ("client", *PROVIDERS):
            OGPUWallet(private_key=self.net.key(role)).save(wallet_block(role), overwrite=True)

    def publish_source(self) -> str:
        from .models import SourceSpec
        from .tasks import make_client

        client = make_client(NETWORK_BLOCK, wallet_block("client"), STORAGE_BLOCK)
        return client.publish_source(
            SourceSpec(
                name="sentiment",
                description="VADER sentiment analysis (vaderSentiment)",
                cpu=f"file://{SENTIMENT}",
                min_payment=10**15,
                min_available_lockup=10**18,
                max_expiry_duration=3600,
                delivery_method="FIRST_RESPONSE",
            )
        )

    def start_workers(self, source: str) -> None:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.actions import WorkPoolCreate

        from .blocks import OGPUNetwork, OGPUStorage, OGPUWallet
        from .worker.configuration import with_defaults
        from .worker.worker import OGPUProviderWorker, worker_command

        # The pool references the saved blocks (its form shows them in its block pickers); each
        # worker signs with its own wallet (PREFECT_INTEGRATIONS_OGPU_PROVIDER_WALLET_BLOCK below).
        template = with_defaults(
            OGPUProviderWorker.get_default_base_job_template(),
            network=OGPUNetwork.load(NETWORK_BLOCK),
            storage=OGPUStorage.load(STORAGE_BLOCK),
            wallet=OGPUWallet.load(wallet_block(PROVIDERS[0])),
            sources=[source],
            max_concurrent_tasks=16,
            poll_interval_s=0.1,
        )
        with get_client(sync_client=True) as c:
            c.create_work_pool(
                WorkPoolCreate(name=POOL, type="ogpu-provider", base_job_template=template), overwrite=True
            )
        for role in PROVIDERS:
            env = self.prefect_env(
                PREFECT_INTEGRATIONS_OGPU_PROVIDER_WALLET_BLOCK=wallet_block(role), PREFECT_WORKER_QUERY_SECONDS="2"
            )
            log = open(self.home / f"worker-{role}.log", "ab")  # noqa: SIM115
            self.procs.append(
                subprocess.Popen(
                    worker_command(POOL, role),
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        assert self.net is not None
        chain = Chain(self.net.network)
        deadline = time.time() + 300  # a loaded machine: each worker imports Prefect first
        for role in PROVIDERS:
            while chain.source(source).get_registrant_id(self.net.address(role)) == 0:
                if time.time() > deadline or any(p.poll() is not None for p in self.procs):
                    raise RuntimeError(f"worker {role} did not register; see {self.home / f'worker-{role}.log'}")
                time.sleep(0.3)

    def wait_services(self, since: float, timeout: float = 300) -> list[str]:
        """Waits until every worker reported its service started (event `ogpu.provider.service.started`,
        emitted once it answers): a batch sent earlier is raced by whichever worker is warm first.
        Returns the roles still not ready at `timeout` (the batch then runs without them)."""
        from .events import resource, stored_events

        assert self.net is not None
        chain_id = self.net.network.chain_id
        ids = {
            role: resource(chain_id, "provider", self.net.address(role))["prefect.resource.id"] for role in PROVIDERS
        }
        wanted = {rid: role for role, rid in ids.items()}
        deadline = time.time() + timeout
        while wanted and time.time() < deadline:
            for e in stored_events("ogpu.provider.service.started", since):
                wanted.pop(e.resource.id, None)
            if wanted:
                if any(p.poll() is not None for p in self.procs):
                    raise RuntimeError(f"a worker stopped; see the worker logs in {self.home}")
                time.sleep(0.5)
        return sorted(wanted.values())

    # ---- teardown ----

    def stop(self) -> None:
        if "prefect" in sys.modules:  # our own logs reach the server before it stops
            from prefect.logging.handlers import APILogWorker

            try:
                APILogWorker.drain_all(timeout=5)
            except Exception:  # stopping matters more than the last log lines
                pass
        for proc in reversed(self.procs):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGINT)
                except ProcessLookupError:
                    continue
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if self.net is not None:
            from ogpu_prefect.backends import owner_tag
            from ogpu_prefect.plugins.local_backend import LocalBackend

            for role in PROVIDERS:  # a worker that could not stop cleanly leaves no service behind
                LocalBackend(owner_tag(self.net.address(role), self.net.network.chain_id, self.api_url)).reap()
        if self.stack is not None:
            self.stack.stop()
        if self.store is not None:
            self.store.__exit__(None, None, None)
        if self.net is not None:
            self.net.stop()


def scored(results: list[Any], texts: list[str]) -> list[tuple[int, str, dict[str, Any], Any]]:
    """(sentence index, text, score or {}, the task's result) for every sentence, in input order."""
    out = []
    for r in results:
        scores = ((r.result or {}).get("result") or {}).get("scores") or []  # the envelope's result
        for j in range(CHUNK):
            i = r.index * CHUNK + j
            if i < len(texts):
                out.append((i, texts[i], scores[j] if j < len(scores) else {}, r))
    return out


def results_table(rows: list[tuple[int, str, dict[str, Any], Any]], limit: int = 12) -> str:
    lines = [f"{'#':>4}  {'label':<9} {'score':>7}  {'provider':<12} {'latency':>8}  text", "-" * 100]
    for i, text, score, r in rows[:limit]:
        lines.append(
            f"{i:>4}  {score.get('label', r.status):<9} {score.get('compound', 0):>+7.3f}  "
            f"{(r.provider or '-')[:12]:<12} {(r.latency_s or 0):>7.2f}s  {text[:56]}"
        )
    if len(rows) > limit:
        lines.append(f"  ... {len(rows) - limit} more")
    return "\n".join(lines)


def main(
    tasks: int = 300, keep: bool = False, say: Callable[[str], None] = print, block_time: float | None = None
) -> int:
    home = get_settings().home.resolve() / "demo"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    texts = [t for t in SENTENCES.read_text().splitlines() if t.strip()][:tasks]
    demo = Demo(say, home)
    t0 = time.monotonic()

    def step(msg: str) -> None:
        say(f"[{time.monotonic() - t0:6.1f}s] {msg}")

    def interrupt(*_: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    try:
        step("starting the devnet (anvil + OpenGPU contracts)")
        demo.net = devnet.start(log_path=home / "anvil.log", block_time=block_time, anvil=get_settings().anvil)
        step(f"devnet at {demo.net.rpc_url}; starting the Prefect server (SQLite)")
        demo.start_prefect()
        use_server(demo.api_url, home / "prefect")  # this process too: its flows, blocks and events
        ui = demo.api_url.removesuffix("/api")
        step(f"Prefect server at {ui}; saving blocks (network, wallets, storage)")
        demo.save_blocks()
        source = demo.publish_source()
        step(f"sentiment source published at {source}; starting 2 provider workers in pool {POOL!r}")
        started = time.time()
        demo.start_workers(source)
        step("workers staked and registered; waiting for their services to start")
        late = demo.wait_services(started)
        if late:
            step(f"not ready yet: {', '.join(late)} (the batch goes ahead; see their logs in {home})")
        chunks = [texts[i : i + CHUNK] for i in range(0, len(texts), CHUNK)]
        step(f"services up; run_batch: {len(texts)} sentences as {len(chunks)} tasks")
        from ogpu_prefect.flows.run_batch import run_batch

        from .chain.types import TaskStatus  # noqa: F401  (keeps the import cost out of the timed batch)

        chain = Chain(demo.net.network)
        client_address = demo.net.address("client")
        balance0 = chain.vault.balance_of(client_address)
        results = run_batch(
            source,
            [{"texts": c} for c in chunks],
            PAYMENT,
            NETWORK_BLOCK,
            wallet_block("client"),
            STORAGE_BLOCK,
            function_name="analyze_batch",
            task_timeout=300,
        )
        spent = balance0 - chain.vault.balance_of(client_address)
        done = [r for r in results if r.status == "finalized"]
        step(f"batch done: {len(done)}/{len(results)} finalized")
        say("")
        rows = scored(results, texts)
        say(results_table(rows))
        labels = Counter(score.get("label", r.status) for _, _, score, r in rows)
        by_provider = Counter((r.provider or "-") for r in done)
        say("")
        say("labels:    " + ", ".join(f"{k} {v}" for k, v in labels.most_common()))
        say("providers: " + ", ".join(f"{k[:12]} {v}" for k, v in by_provider.most_common()))
        say(f"cost:      {spent / 10**18:.4f} OGPU for {len(done)} task(s) ({PAYMENT / 10**18:.4f} each)")
        say(f"Prefect UI: {ui}/runs  (flow runs, provider task runs, logs, artifacts; pool {POOL!r})")
        if keep:
            say(
                f"From another shell: PREFECT_API_URL={demo.api_url} uv run ogpu-prefect vault balance "
                f"--network {NETWORK_BLOCK} --wallet {wallet_block('client')}"
            )
            say("--keep: everything stays up; Ctrl-C stops it")
            while True:
                time.sleep(3600)
        return 0 if len(done) == len(results) else 1
    except KeyboardInterrupt:
        say("\ninterrupted")
        return 130
    finally:
        # A second Ctrl-C (a terminal and `uv run` both deliver one) must not cut the clean-up short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        step("stopping the workers, the Prefect server and the devnet")
        demo.stop()
