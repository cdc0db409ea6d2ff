"""Fetches made on someone else's behalf, and run parameters that name files or URLs: the
scenarios of bench/reliability.py for them (tests/test_fetch_confinement.py runs them too). Same
`Ctx` and `Outcome` as tests/scenarios.py, a real devnet, real HTTP servers in threads
(tests/fetch_servers.py).

- `provider_fetch`: a hostile client publishes tasks whose config URL points at the provider's
  loopback, a private address, a local file, a redirect to loopback, a trickling body or a dot
  segment escape; a real `Provider` (the worker's code path: attempt, then `execute`) serves
  them. Nothing may be fetched outside its allowed origins, no response submitted (so nothing
  leaks into a public payload), and the provider's balances unchanged.
- `stream_inputs_escape`, `scheduled_pattern_escape`: run parameters pointing outside the input
  roots: nothing read, nothing moved, nothing published.
- `unreadable_read_url`: a storage whose read_url nobody can read: nothing published, no escrow.

What is simulated: nothing but the hostile client's URLs (a raw publishTask with the URL it
chose; the real network lets any client do that)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ogpu_prefect.blocks import OGPUStorage
from ogpu_prefect.chain.connection import Chain
from ogpu_prefect.chain.logs import created_address
from ogpu_prefect.chain.structs import TaskParams
from ogpu_prefect.chain.types import Environment, TaskStatus
from ogpu_prefect.plugin_manager import PluginKind, create
from ogpu_prefect.worker.provider import Provider

from .fetch_servers import SECRET, RedirectServer, SecretServer, TrickleServer
from .scenarios import PAYMENT, Ctx, Outcome, audit, run_flow

PROVIDER_FETCHES = ("loopback", "private", "file", "redirect", "slow", "dots")
ROOTS = "PREFECT_INTEGRATIONS_OGPU_INPUT_ROOTS"


def _hostile_task(ctx: Ctx, source: str, config_url: str) -> str:
    """A task whose config URL the client chose freely (a raw publishTask)."""
    sender = ctx.chain.sender(ctx.devnet.key("client"))
    call = ctx.chain.controller.publish_task(TaskParams(source, config_url, ctx.chain.now() + 600, PAYMENT))
    return created_address(sender.transact(call), "TaskPublished", "task", ctx.chain.network.nexus)


def _balances(ctx: Ctx, address: str) -> tuple[int, int, int]:
    v = ctx.chain.vault
    return v.balance_of(address), v.lockup_of(address), v.total_earnings_of(address)


def provider_fetch(ctx: Ctx, kind: str, n: int = 3) -> Outcome:
    """`n` tasks with a hostile config URL of `kind` (PROVIDER_FETCHES) served by a real provider."""
    outcome, source = Outcome(f"provider fetch: {kind}", n), ctx.source()
    start = ctx.chain.block_number() + 1
    secret_file = ctx.workdir / "provider-secret.json"
    secret_file.write_bytes(SECRET)
    with SecretServer() as internal, RedirectServer(f"{internal.url}/secret") as hop, TrickleServer(0.5, 30) as slow:
        url, origins = {
            "loopback": (f"{internal.url}/config", None),
            "private": ("http://10.255.255.1/config", None),
            "file": (f"file://{secret_file}", None),
            "redirect": (f"{hop.url}/configs/c", [f"{hop.url}/configs/", ctx.store.base_url]),
            "slow": (f"{slow.url}/c", [slow.url, ctx.store.base_url]),
            "dots": (f"{internal.url}/public/../secret", [f"{internal.url}/public/", ctx.store.base_url]),
        }[kind]
        provider = Provider(
            Chain(ctx.devnet.network),
            ctx.devnet.key("provider3"),
            ctx.store,
            create(PluginKind.HARDWARE_BACKEND, "local"),
            Environment.CPU,
            config_origins=origins,
        )
        tasks: list[str] = []
        try:
            provider.ensure_standing([source])
            before = _balances(ctx, provider.address)
            tasks = [_hostile_task(ctx, source, f"{url}?i={i}") for i in range(n)]
            if provider.attempt(tasks) != tasks:
                outcome.problems.append("the attempts were not mined")
            t0 = time.monotonic()
            for t in tasks:
                try:
                    provider.execute(t)
                    outcome.problems.append(f"task {t} was executed from {url}")
                except Exception as e:  # the refusal (UntrustedUrlError) or the deadline (StorageError)
                    outcome.detail = f"{type(e).__name__}"
            held = (time.monotonic() - t0) / n
            if _balances(ctx, provider.address) != before:
                outcome.problems.append("the provider's balances moved")
        finally:
            provider.close()
        if internal.hits:
            outcome.problems.append(f"fetched outside the allowed origins: {internal.paths}")
        if held > 12:
            outcome.problems.append(f"each execute was held {held:.0f} s")
    statuses = ctx.chain.read_many([ctx.chain.task(t).read.get_status() for t in tasks])
    answered = [t for t, s in zip(tasks, statuses) if TaskStatus(s) is not TaskStatus.ATTEMPTED]
    if answered:
        outcome.problems.append(f"{len(answered)} task(s) were answered")
    if any(b"hunter2" in p.read_bytes() for p in ctx.store.root.iterdir() if p.is_file()):
        outcome.problems.append("the secret is in the public store")
    outcome.detail = f"{outcome.detail}, {held:.1f} s per task"
    # The hostile client's escrow waits for the network's expiry handling: its own choice.
    return audit(ctx, outcome, source, start, reported=set(tasks))


@contextmanager
def _input_roots(*roots: Path) -> Iterator[None]:
    before = os.environ.get(ROOTS)
    os.environ[ROOTS] = json.dumps([str(r) for r in roots])
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(ROOTS, None)
        else:
            os.environ[ROOTS] = before


def _refused(outcome: Outcome, state: Any, field: str) -> None:
    from ogpu_prefect.chain.errors import InvalidInputError

    error = state.result(raise_on_failure=False) if state.is_failed() else None
    if not isinstance(error, InvalidInputError) or error.field != field:
        outcome.problems.append(f"not refused with an InvalidInputError naming {field}: {state} {error!r}")
    else:
        outcome.detail = str(error)[:80]


def stream_inputs_escape(ctx: Ctx) -> Outcome:
    """stream_batch `inputs` at an internal URL and at a file outside the input roots."""
    from ogpu_prefect.flows.stream_batch import stream_batch

    outcome, source = Outcome("stream_batch inputs outside the roots", 0), ctx.source()
    start = ctx.chain.block_number() + 1
    (ctx.workdir / "in").mkdir(exist_ok=True)
    private = ctx.workdir / "private.jsonl"
    private.write_text('{"db_password": "hunter2"}\n')
    with SecretServer() as internal, _input_roots(ctx.workdir / "in"):
        for inputs in [f"{internal.url}/data.jsonl", f"{ctx.workdir}/in/../private.jsonl"]:
            state = stream_batch(
                source, inputs, PAYMENT, ctx.network(), ctx.wallet(), ctx.storage(),
                function_name="echo", return_state=True,
            )  # fmt: skip
            _refused(outcome, state, "inputs")
        if internal.hits:
            outcome.problems.append(f"the internal server was read {internal.hits} time(s)")
    return audit(ctx, outcome, source, start)


def scheduled_pattern_escape(ctx: Ctx) -> Outcome:
    """scheduled_batch with `pattern='../private/*.json'`: the private file is neither published
    nor moved; the inbox's own file is left for a proper run."""
    from ogpu_prefect.flows.scheduled_batch import scheduled_batch

    outcome, source = Outcome("scheduled_batch pattern outside the inbox", 0), ctx.source()
    start = ctx.chain.block_number() + 1
    inbox, private = ctx.workdir / "inbox", ctx.workdir / "private"
    inbox.mkdir(exist_ok=True)
    private.mkdir(exist_ok=True)
    (private / "secret.json").write_text('{"db_password": "hunter2"}')
    (inbox / "mine.json").write_text('[{"i": 1}]')
    with _input_roots(ctx.workdir / "inbox"):
        state = scheduled_batch(
            f"file://{inbox}", source, PAYMENT, ctx.network(), ctx.wallet(), ctx.storage(),
            pattern="../private/*.json", function_name="echo", return_state=True,
        )  # fmt: skip
    _refused(outcome, state, "pattern")
    if not (private / "secret.json").exists() or (inbox / "done").exists():
        outcome.problems.append("a file was moved")
    return audit(ctx, outcome, source, start)


def unreadable_read_url(ctx: Ctx, n: int = 5) -> Outcome:
    """run_batch through a storage whose read_url nobody can read: refused before any wei moves."""
    outcome, source = Outcome("storage read_url unreadable", 0), ctx.source()
    start = ctx.chain.block_number() + 1
    client = ctx.devnet.address("client")
    frozen = ctx.chain.vault.frozen_payment(client)
    storage = OGPUStorage(write_url=f"file://{ctx.workdir / 'unread'}", read_url="http://127.0.0.1:9")
    _refused(outcome, run_flow(ctx, source, n, storage=storage), "storage.read_url")
    if ctx.chain.vault.frozen_payment(client) != frozen:
        outcome.problems.append("escrow was frozen")
    return audit(ctx, outcome, source, start)
