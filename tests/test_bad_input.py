"""Bad input, surface by surface (client, models, Prefect tasks, the run_batch flow, blocks,
storage, the provider pool's job variables, the CLI): every case gets a typed error naming the
field, moves no wei (the client's Vault balance and nonce are unchanged) and never echoes a
private key (the client's own key is pasted into many fields).

Each table row is (id, call(world), error class, field). Pydantic models (blocks, job variables,
SourceSpec built directly) raise pydantic's ValidationError; there the field is the first error's
`loc`. One devnet state and one Prefect test server serve the cases that reach a chain or
Prefect; the blocks, storage, job-variable and CLI cases reach neither and run without them (the
fast tier, tests/conftest.py)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from ogpu_prefect.batch import BatchKeyConflictError, DeliveryMismatchError, open_batch
from ogpu_prefect.blocks import OGPUNetwork, OGPUStorage, OGPUWallet
from ogpu_prefect.chain.devnet import DEV_KEYS, Devnet
from ogpu_prefect.chain.errors import (
    BalanceTooLowError,
    BudgetExceededError,
    ExpiryOutOfRangeError,
    InvalidInputError,
    PaymentOutOfRangeError,
    SourceNotActiveInputError,
    UnknownSourceInputError,
)
from ogpu_prefect.chain.network import Network
from ogpu_prefect.chain.types import DeliveryMethod
from ogpu_prefect.models import PublishedTask, SourceSpec, TaskInput
from ogpu_prefect.storage import LocalStore
from ogpu_prefect.validation import SecretInWrongFieldError

from .scenarios import Ctx

KEY = DEV_KEYS[1]  # the devnet client's own key: the worst one to leak
KEY_HEX = KEY[2:].lower()
ETHER = 10**18
PAYMENT = 10**16
DEAD = "0x000000000000000000000000000000000000dEaD"
URL = "http://127.0.0.1:9/compose.yml"


@dataclass
class World:
    devnet: Devnet
    ctx: Ctx
    source: str  # FIRST_RESPONSE
    manual_source: str  # MANUAL_CONFIRMATION
    inactive_source: str
    conflict_key: str  # a batch_key already opened on manual_source

    def __post_init__(self) -> None:
        self.chain = self.ctx.chain
        self.network = self.ctx.network()
        self.wallet = self.ctx.wallet()
        self.storage = self.ctx.storage()
        self.client = self.ctx.client()
        self.addr = self.devnet.address("client")

    def money(self) -> tuple[int, int]:
        """The client's Vault balance and transaction count: no wei moved when both are unchanged."""
        return (
            self.chain.vault.balance_of(self.addr),
            int(self.chain.rpc.call("eth_getTransactionCount", [self.addr, "latest"]), 16),
        )

    def blocks(self) -> tuple[OGPUNetwork, OGPUWallet, OGPUStorage]:
        return self.network, self.wallet, self.storage


@pytest.fixture(scope="module")
def world(session_devnet: Devnet, prefect_harness: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    snap = session_devnet.snapshot()
    root = tmp_path_factory.mktemp("bad-input")
    with LocalStore(root / "payloads") as store:
        ctx = Ctx(session_devnet, store, root)
        client = ctx.client()
        source = ctx.source()
        manual = ctx.source(DeliveryMethod.MANUAL_CONFIRMATION)
        inactive = ctx.source()
        client.inactivate_source(inactive)
        conflict_key = f"bad-input-conflict-{snap}"
        open_batch(client, conflict_key, manual)
        yield World(session_devnet, ctx, source, manual, inactive, conflict_key)
    session_devnet.revert(snap)


@dataclass
class Offline:
    """The world of the cases that only build a block or a model, check a payload or parse a
    command line: no chain or Prefect server is within their reach (the network block names a
    port nothing listens on), so none can move wei, and they run in the fast tier."""

    network: OGPUNetwork


def offline() -> Offline:
    addresses = {
        name: "0x" + f"{i + 1:02x}" * 20 for i, name in enumerate(("nexus", "controller", "terminal", "vault"))
    }
    return Offline(OGPUNetwork(rpc_url="http://127.0.0.1:9", chain_id=31337, **addresses))


@pytest.fixture(autouse=True)
def no_key_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Whatever a case logs (ours, Prefect's: it logs the parameters it refuses) holds no key."""
    yield
    assert KEY_HEX not in caplog.text.lower(), "the key is in the logs"


@dataclass(frozen=True)
class Case:
    id: str
    call: Callable[[World], Any]
    error: type[BaseException]
    field: str


def field_of(error: BaseException) -> str:
    if isinstance(error, InvalidInputError):
        return error.field
    if isinstance(error, ValidationError):
        return ".".join(str(p) for p in error.errors()[0]["loc"])
    return f"<no field: {type(error).__name__}>"


def texts(error: BaseException) -> Iterator[str]:
    """The error's text and that of every exception chained to it (a traceback shows them all)."""
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield str(e)
        yield repr(e)
        e = e.__cause__ or (None if e.__suppress_context__ else e.__context__)


def check(world: World | Offline, case: Case) -> BaseException:
    before = world.money() if isinstance(world, World) else None
    try:
        case.call(world)
    except Exception as e:
        error: BaseException = e
    else:
        pytest.fail(f"{case.id}: accepted")
    assert isinstance(error, case.error), f"{case.id}: {type(error).__name__}: {error}"
    assert field_of(error) == case.field, f"{case.id}: {error}"
    for text in texts(error):
        assert KEY_HEX not in text.lower(), f"{case.id}: the key is echoed in {type(error).__name__}"
    if isinstance(world, World):
        assert world.money() == before, f"{case.id}: wei moved"
    return error


def ids(cases: list[Case]) -> list[str]:
    return [c.id for c in cases]


# ---- client (OGPUClient, no Prefect) and the models it takes ----


def task_input(data: Any = None, **extra: Any) -> TaskInput:
    return TaskInput(function_name="echo", data={"i": 1} if data is None else data, **extra)


def publish(w: World, **over: Any) -> Any:
    args = {
        "source": w.source,
        "inputs": [task_input()],
        "payment": PAYMENT,
        "expiry_time": w.chain.now() + 300,
    }
    args.update({k: v(w) if callable(v) else v for k, v in over.items()})
    source, inputs, payment, expiry = (args.pop(k) for k in ("source", "inputs", "payment", "expiry_time"))
    return w.client.publish_tasks(source, inputs, payment, expiry, **args)


def spec(**over: Any) -> dict[str, Any]:
    return {"name": "echo", "cpu": URL, "min_payment": 10**15, **over}


def new_client(signer: Any = None, **kwargs: Any) -> Callable[[World], Any]:
    from ogpu_prefect.client import OGPUClient

    return lambda w: OGPUClient(w.chain, w.devnet.key("client") if signer is None else signer, **kwargs)


def expiry_in(seconds: int) -> Callable[[World], int]:
    return lambda w: w.chain.now() + seconds


CLIENT = [
    Case("source-short", lambda w: w.client.source_terms("0x12"), UnknownSourceInputError, "source"),
    Case("source-int", lambda w: w.client.source_terms(123), UnknownSourceInputError, "source"),
    Case("source-none", lambda w: w.client.source_terms(None), UnknownSourceInputError, "source"),
    Case("source-key", lambda w: w.client.source_terms(KEY), SecretInWrongFieldError, "source"),
    Case("source-bare-key", lambda w: w.client.source_terms(KEY[2:]), SecretInWrongFieldError, "source"),
    Case("source-not-hex", lambda w: w.client.source_terms("0x" + "zz" * 20), UnknownSourceInputError, "source"),
    Case("source-no-prefix", lambda w: w.client.source_terms("ab" * 20 + "00"), UnknownSourceInputError, "source"),
    Case("source-unknown", lambda w: w.client.source_terms(DEAD), UnknownSourceInputError, "source"),
    Case("source-an-account", lambda w: w.client.source_terms(w.addr), UnknownSourceInputError, "source"),
    Case(
        "source-a-contract",
        lambda w: w.client.source_terms(w.chain.network.vault),
        UnknownSourceInputError,
        "source",
    ),
    Case("publish-inactive", lambda w: publish(w, source=w.inactive_source), SourceNotActiveInputError, "source"),
    Case("payment-negative", lambda w: publish(w, payment=-1), PaymentOutOfRangeError, "payment"),
    Case("payment-zero", lambda w: publish(w, payment=0), PaymentOutOfRangeError, "payment"),
    Case("payment-below-min", lambda w: publish(w, payment=10**10), PaymentOutOfRangeError, "payment"),
    Case("payment-float", lambda w: publish(w, payment=1e16), PaymentOutOfRangeError, "payment"),
    Case("payment-str", lambda w: publish(w, payment=str(PAYMENT)), PaymentOutOfRangeError, "payment"),
    Case("payment-bool", lambda w: publish(w, payment=True), PaymentOutOfRangeError, "payment"),
    Case("payment-none", lambda w: publish(w, payment=None), PaymentOutOfRangeError, "payment"),
    Case("payment-decimal", lambda w: publish(w, payment=Decimal(PAYMENT)), PaymentOutOfRangeError, "payment"),
    Case("payment-2^96", lambda w: publish(w, payment=2**96), PaymentOutOfRangeError, "payment"),
    Case("payment-2^256", lambda w: publish(w, payment=2**256), PaymentOutOfRangeError, "payment"),
    Case("payment-key", lambda w: publish(w, payment=KEY), PaymentOutOfRangeError, "payment"),
    Case("payment-over-balance", lambda w: publish(w, payment=2000 * ETHER), BalanceTooLowError, "payment"),
    Case(
        "payment-batch-over-balance",
        lambda w: publish(w, inputs=[task_input({"i": i}) for i in range(3)], payment=400 * ETHER),
        BalanceTooLowError,
        "payment",
    ),
    Case("expiry-zero", lambda w: publish(w, expiry_time=0), ExpiryOutOfRangeError, "expiry_time"),
    Case("expiry-past", lambda w: publish(w, expiry_time=expiry_in(-10)), ExpiryOutOfRangeError, "expiry_time"),
    Case("expiry-too-soon", lambda w: publish(w, expiry_time=expiry_in(5)), ExpiryOutOfRangeError, "expiry_time"),
    Case("expiry-beyond-max", lambda w: publish(w, expiry_time=expiry_in(4000)), ExpiryOutOfRangeError, "expiry_time"),
    Case("expiry-float", lambda w: publish(w, expiry_time=w.chain.now() + 300.0), ExpiryOutOfRangeError, "expiry_time"),
    Case("expiry-str", lambda w: publish(w, expiry_time="2030-01-01"), ExpiryOutOfRangeError, "expiry_time"),
    Case("expiry-bool", lambda w: publish(w, expiry_time=True), ExpiryOutOfRangeError, "expiry_time"),
    Case("expiry-none", lambda w: publish(w, expiry_time=None), ExpiryOutOfRangeError, "expiry_time"),
    Case("expiry-key", lambda w: publish(w, expiry_time=KEY), ExpiryOutOfRangeError, "expiry_time"),
    Case("data-set", lambda w: publish(w, inputs=[task_input({1, 2})]), InvalidInputError, "inputs[0].data"),
    Case("data-nan", lambda w: publish(w, inputs=[task_input(math.nan)]), InvalidInputError, "inputs[0].data"),
    Case("data-too-big", lambda w: publish(w, inputs=[task_input("x" * 600_000)]), InvalidInputError, "inputs[0].data"),
    Case(
        "data-object-second",
        lambda w: publish(w, inputs=[task_input(), task_input(object())]),
        InvalidInputError,
        "inputs[1].data",
    ),
    Case("data-key", lambda w: publish(w, inputs=[task_input(KEY)]), SecretInWrongFieldError, "inputs[0]"),
    Case(
        "data-nested-key",
        lambda w: publish(w, inputs=[task_input(), task_input({"k": [KEY]})]),
        SecretInWrongFieldError,
        "inputs[1]",
    ),
    Case(
        "input-extra-key",
        lambda w: publish(w, inputs=[task_input(note=KEY)]),
        SecretInWrongFieldError,
        "inputs[0]",
    ),
    Case(
        "input-a-dict",
        lambda w: publish(w, inputs=[{"function_name": "echo", "data": 1}]),
        InvalidInputError,
        "inputs[0]",
    ),
    Case("inputs-a-str", lambda w: publish(w, inputs="abc"), InvalidInputError, "inputs"),
    Case("inputs-none", lambda w: publish(w, inputs=None), InvalidInputError, "inputs"),
    Case(
        "marks-short",
        lambda w: publish(w, inputs=[task_input(), task_input()], marks=[{}]),
        InvalidInputError,
        "marks",
    ),
    Case("marks-key", lambda w: publish(w, marks=[{"batch": KEY}]), SecretInWrongFieldError, "marks[0]"),
    Case("marks-not-dicts", lambda w: publish(w, marks=["x"]), InvalidInputError, "marks[0]"),
    Case(
        "indexes-short",
        lambda w: publish(w, inputs=[task_input(), task_input()], indexes=[0]),
        InvalidInputError,
        "indexes",
    ),
    Case("indexes-str", lambda w: publish(w, indexes=["a"]), InvalidInputError, "indexes[0]"),
    Case("indexes-negative", lambda w: publish(w, indexes=[-1]), InvalidInputError, "indexes[0]"),
    Case(
        "reconcile-negative",
        lambda w: publish(w, reconcile_from_block=-1),
        InvalidInputError,
        "reconcile_from_block",
    ),
    Case("reconcile-str", lambda w: publish(w, reconcile_from_block="0"), InvalidInputError, "reconcile_from_block"),
    Case("spec-a-str", lambda w: w.client.publish_source("echo"), InvalidInputError, "spec"),
    Case(
        "spec-no-payment",
        lambda w: w.client.publish_source({"name": "x", "cpu": URL}),
        InvalidInputError,
        "spec.min_payment",
    ),
    Case("spec-key-name", lambda w: w.client.publish_source(spec(name=KEY)), SecretInWrongFieldError, "spec"),
    Case(
        "spec-no-environment",
        lambda w: w.client.publish_source(spec(cpu="")),
        InvalidInputError,
        "cpu/nvidia/amd",
    ),
    Case(
        "spec-min-payment-2^96",
        lambda w: w.client.publish_source(spec(min_payment=2**96)),
        InvalidInputError,
        "spec.min_payment",
    ),
    Case(
        "spec-lockup-2^256",
        lambda w: w.client.publish_source(spec(min_available_lockup=2**256)),
        InvalidInputError,
        "spec.min_available_lockup",
    ),
    Case(
        "spec-expiry-duration-zero",
        lambda w: w.client.publish_source(spec(max_expiry_duration=0)),
        InvalidInputError,
        "spec.max_expiry_duration",
    ),
    Case(
        "spec-delivery-bogus",
        lambda w: w.client.publish_source(spec(delivery_method="fastest")),
        InvalidInputError,
        "spec.delivery_method",
    ),
    Case(
        "spec-compose-not-url",
        lambda w: w.client.publish_source(spec(cpu="compose.yml")),
        InvalidInputError,
        "spec.cpu",
    ),
    Case("model-spec-key", lambda w: SourceSpec(**spec(nvidia=KEY)), ValidationError, "nvidia"),
    Case("model-spec-negative", lambda w: SourceSpec(**spec(min_payment=-1)), ValidationError, "min_payment"),
    Case("model-input-empty-name", lambda w: TaskInput(function_name=""), ValidationError, "function_name"),
    Case("model-input-key-name", lambda w: TaskInput(function_name=KEY), ValidationError, "function_name"),
    Case(
        "update-unknown-source",
        lambda w: w.client.update_source(DEAD, SourceSpec(**spec())),
        UnknownSourceInputError,
        "source",
    ),
    Case("inactivate-key", lambda w: w.client.inactivate_source(KEY), SecretInWrongFieldError, "source"),
    Case("inactivate-short", lambda w: w.client.inactivate_source("0x12"), UnknownSourceInputError, "source"),
    Case("confirm-short", lambda w: w.client.confirm_responses(["0x12"]), InvalidInputError, "responses[0]"),
    Case("confirm-key", lambda w: w.client.confirm_responses([KEY]), SecretInWrongFieldError, "responses[0]"),
    Case("confirm-a-str", lambda w: w.client.confirm_responses(DEAD), InvalidInputError, "responses"),
    Case("cancel-none", lambda w: w.client.cancel_tasks([DEAD, None]), InvalidInputError, "tasks[1]"),
    Case("cancel-key", lambda w: w.client.cancel_tasks([KEY[2:]]), SecretInWrongFieldError, "tasks[0]"),
    Case("reclaim-short", lambda w: w.client.reclaim_expired(["0x12"]), InvalidInputError, "tasks[0]"),
    Case("signer-short-key", new_client(KEY[:-1]), InvalidInputError, "signer"),
    Case("signer-zero-key", new_client("0x" + "00" * 32), InvalidInputError, "signer"),
    Case("signer-int", new_client(123), InvalidInputError, "signer"),
    Case("signer-address", new_client(DEAD), InvalidInputError, "signer"),
    Case("store-a-url", new_client(store="file:///tmp/payloads"), InvalidInputError, "store"),
    Case(
        "wait-poll-zero",
        lambda w: w.client.wait_for([], _first_response(), deadline=0, from_block=0, poll_interval=0),
        InvalidInputError,
        "poll_interval",
    ),
    Case(
        "wait-strategy-name",
        lambda w: w.client.wait_for([], "first_response", deadline=0, from_block=0),
        InvalidInputError,
        "strategy",
    ),
    Case(
        "wait-from-block-negative",
        lambda w: w.client.wait_for([], _first_response(), deadline=0, from_block=-1),
        InvalidInputError,
        "from_block",
    ),
]


def _first_response() -> Any:
    from ogpu_prefect.plugin_manager import PluginKind, create

    return create(PluginKind.DELIVERY_METHOD, "first_response")


@pytest.mark.parametrize("case", CLIENT, ids=ids(CLIENT))
def test_client(world: World, case: Case) -> None:
    check(world, case)


# ---- Prefect tasks (their functions, called directly) ----


def tasks_mod() -> Any:
    import ogpu_prefect.tasks as tasks

    return tasks


def pub_task(**over: Any) -> Callable[[World], Any]:
    def call(w: World) -> Any:
        args: dict[str, Any] = {
            "source": w.source,
            "inputs": [{"i": 1}, {"i": 2}],
            "payment": PAYMENT,
            "network": w.network,
            "wallet": w.wallet,
            "storage": w.storage,
            "function_name": "echo",
            "ttl": 300,
        }
        args.update({k: v(w) if callable(v) else v for k, v in over.items()})
        return tasks_mod().publish_tasks.fn(**args)

    return call


def wait_task(**over: Any) -> Callable[[World], Any]:
    def call(w: World) -> Any:
        published = [
            PublishedTask(index=0, address=DEAD, source=w.source, payment=PAYMENT, expiry_time=0, config_url="x")
        ]
        args: dict[str, Any] = {
            "published": published,
            "network": w.network,
            "wallet": w.wallet,
            "storage": w.storage,
            "deadline_s": 0.0,
        }
        args.update(over)
        return tasks_mod().wait_for_results.fn(**args)

    return call


def blocks_task(name: str, *args: Any, **over: Any) -> Callable[[World], Any]:
    """A task taking (..., network, wallet), with one of the blocks replaced."""

    def call(w: World) -> Any:
        kw = {"network": w.network, "wallet": w.wallet, **over}
        import ogpu_prefect.vault

        found = getattr(tasks_mod(), name, None) or getattr(ogpu_prefect.vault, name)
        return found.fn(*args, **kw)

    return call


def client_from(**over: Any) -> Callable[[World], Any]:
    def call(w: World) -> Any:
        kw = {"network": w.network, "wallet": w.wallet, "storage": w.storage, **over}
        return tasks_mod().make_client(**kw)

    return call


def fsspec_without_url() -> OGPUStorage:
    return OGPUStorage(kind="fsspec")


TASKS = [
    Case("network-key", client_from(network=KEY), SecretInWrongFieldError, "network"),
    Case("network-int", client_from(network=123), InvalidInputError, "network"),
    Case("network-missing", client_from(network="no-such-network"), InvalidInputError, "network"),
    Case("network-empty", client_from(network=" "), InvalidInputError, "network"),
    Case("network-none", client_from(network=None), InvalidInputError, "network"),
    Case("network-a-wallet", lambda w: client_from(network=w.wallet)(w), InvalidInputError, "network"),
    Case("wallet-key", client_from(wallet=KEY), SecretInWrongFieldError, "wallet"),
    Case("wallet-bare-key", client_from(wallet=KEY[2:]), SecretInWrongFieldError, "wallet"),
    Case("wallet-key-in-list", client_from(wallet=[KEY]), SecretInWrongFieldError, "wallet"),
    Case("wallet-missing", client_from(wallet="no-such-wallet"), InvalidInputError, "wallet"),
    Case("wallet-a-network", lambda w: client_from(wallet=w.network)(w), InvalidInputError, "wallet"),
    Case("storage-key", client_from(storage=KEY), SecretInWrongFieldError, "storage"),
    Case("storage-missing", client_from(storage="no-such-storage"), InvalidInputError, "storage"),
    Case("storage-no-write-url", client_from(storage=fsspec_without_url()), InvalidInputError, "write_url"),
    Case("inputs-str", pub_task(inputs="abc"), InvalidInputError, "inputs"),
    Case("inputs-dict", pub_task(inputs={"i": 1}), InvalidInputError, "inputs"),
    Case("inputs-int", pub_task(inputs=5), InvalidInputError, "inputs"),
    Case("inputs-none", pub_task(inputs=None), InvalidInputError, "inputs"),
    Case("inputs-no-function", pub_task(inputs=[1, 2], function_name=None), InvalidInputError, "inputs[0]"),
    Case("input-empty-function", pub_task(inputs=[{"function_name": ""}]), InvalidInputError, "inputs[0]"),
    Case("input-int-function", pub_task(inputs=[{"function_name": 5}]), InvalidInputError, "inputs[0]"),
    Case("input-key", pub_task(inputs=[{"i": 1}, KEY]), SecretInWrongFieldError, "inputs[1]"),
    Case("input-nested-key", pub_task(inputs=[{"x": [KEY]}]), SecretInWrongFieldError, "inputs[0]"),
    Case("input-key-function", pub_task(inputs=[{"function_name": KEY}]), SecretInWrongFieldError, "inputs[0]"),
    Case("input-set", pub_task(inputs=[{"s": {1, 2}}]), InvalidInputError, "inputs[0].data"),
    Case("input-too-big", pub_task(inputs=[{"big": "x" * 600_000}]), InvalidInputError, "inputs[0].data"),
    Case("function-empty", pub_task(function_name=""), InvalidInputError, "function_name"),
    Case("function-key", pub_task(function_name=KEY), SecretInWrongFieldError, "function_name"),
    Case("function-int", pub_task(function_name=5), InvalidInputError, "function_name"),
    Case("ttl-zero", pub_task(ttl=0), InvalidInputError, "ttl"),
    Case("ttl-negative", pub_task(ttl=-5), InvalidInputError, "ttl"),
    Case("ttl-float", pub_task(ttl=1.5), InvalidInputError, "ttl"),
    Case("ttl-str", pub_task(ttl="60"), InvalidInputError, "ttl"),
    Case("ttl-bool", pub_task(ttl=True), InvalidInputError, "ttl"),
    Case("ttl-too-short", pub_task(ttl=5), ExpiryOutOfRangeError, "ttl"),
    Case("ttl-beyond-max", pub_task(ttl=10_000), ExpiryOutOfRangeError, "ttl"),
    Case("task-payment-negative", pub_task(payment=-1), PaymentOutOfRangeError, "payment"),
    Case("task-payment-str", pub_task(payment="x"), PaymentOutOfRangeError, "payment"),
    Case("task-payment-float", pub_task(payment=1.5), PaymentOutOfRangeError, "payment"),
    Case("task-source-key", pub_task(source=KEY), SecretInWrongFieldError, "source"),
    Case("task-source-short", pub_task(source="0x12"), UnknownSourceInputError, "source"),
    Case("task-source-inactive", pub_task(source=lambda w: w.inactive_source), SourceNotActiveInputError, "source"),
    Case("batch-key-key", pub_task(batch_key=KEY), SecretInWrongFieldError, "batch_key"),
    Case("batch-key-empty", pub_task(batch_key=""), InvalidInputError, "batch_key"),
    Case("batch-key-int", pub_task(batch_key=5), InvalidInputError, "batch_key"),
    Case("attempt-negative", pub_task(attempt=-1), InvalidInputError, "attempt"),
    Case("attempt-str", pub_task(attempt="0"), InvalidInputError, "attempt"),
    Case("task-indexes-short", pub_task(indexes=[0]), InvalidInputError, "indexes"),
    Case("task-indexes-str", pub_task(indexes="ab"), InvalidInputError, "indexes"),
    Case("task-reconcile-negative", pub_task(reconcile_from_block=-1), InvalidInputError, "reconcile_from_block"),
    Case("poll-zero", wait_task(poll_interval=0), InvalidInputError, "poll_interval"),
    Case("poll-nan", wait_task(poll_interval=math.nan), InvalidInputError, "poll_interval"),
    Case("poll-str", wait_task(poll_interval="0.1"), InvalidInputError, "poll_interval"),
    Case("poll-too-slow", wait_task(poll_interval=61), InvalidInputError, "poll_interval"),
    Case("delivery-unknown", wait_task(delivery="fastest"), InvalidInputError, "delivery"),
    Case("delivery-key", wait_task(delivery=KEY), SecretInWrongFieldError, "delivery"),
    Case("delivery-empty", wait_task(delivery=""), InvalidInputError, "delivery"),
    Case("options-str", wait_task(delivery_options="k=2"), InvalidInputError, "delivery_options"),
    Case("options-unknown", wait_task(delivery_options={"bogus": 1}), InvalidInputError, "delivery_options.bogus"),
    Case(
        "options-key",
        wait_task(delivery="manual", delivery_options={"policy": KEY}),
        SecretInWrongFieldError,
        "delivery_options",
    ),
    Case(
        "options-policy",
        wait_task(delivery="manual", delivery_options={"policy": "cheapest"}),
        InvalidInputError,
        "delivery_options",
    ),
    Case(
        "options-window-str",
        wait_task(delivery="auction", delivery_options={"window": "5s"}),
        InvalidInputError,
        "delivery_options.window",
    ),
    Case(
        "options-window-nan",
        wait_task(delivery="auction", delivery_options={"window": math.nan}),
        InvalidInputError,
        "delivery_options.window",
    ),
    Case(
        "options-k-zero",
        wait_task(delivery="consensus", delivery_options={"k": 0}),
        InvalidInputError,
        "delivery_options",
    ),
    Case(
        "options-k-str",
        wait_task(delivery="consensus", delivery_options={"k": "2"}),
        InvalidInputError,
        "delivery_options.k",
    ),
    Case(
        "options-enough-str",
        wait_task(delivery="manual", delivery_options={"policy": "lowest_price", "enough": "x"}),
        InvalidInputError,
        "delivery_options.enough",
    ),
    Case(
        "options-validator-str",
        wait_task(delivery="manual", delivery_options={"validator": "len"}),
        InvalidInputError,
        "delivery_options.validator",
    ),
    Case("published-str", wait_task(published="abc"), InvalidInputError, "published"),
    Case("published-dict", wait_task(published=[{"address": DEAD}]), InvalidInputError, "published[0].index"),
    Case("deadline-negative", wait_task(deadline_s=-1), InvalidInputError, "deadline_s"),
    Case("deadline-str", wait_task(deadline_s="60"), InvalidInputError, "deadline_s"),
    Case("from-block-negative", wait_task(from_block=-1), InvalidInputError, "from_block"),
    Case("from-block-str", wait_task(from_block="latest"), InvalidInputError, "from_block"),
    Case("progress-not-callable", wait_task(progress="bar"), InvalidInputError, "progress"),
    Case("wait-wallet-key", wait_task(wallet=KEY), SecretInWrongFieldError, "wallet"),
    Case("confirm-short", blocks_task("confirm_response", "0x12"), InvalidInputError, "response"),
    Case("confirm-key", blocks_task("confirm_response", KEY), SecretInWrongFieldError, "response"),
    Case("confirm-none", blocks_task("confirm_response", None), InvalidInputError, "response"),
    Case("cancel-int", blocks_task("cancel_task", 123), InvalidInputError, "task_address"),
    Case("cancel-bare-key", blocks_task("cancel_task", KEY[2:]), SecretInWrongFieldError, "task_address"),
    Case("cancel-wallet-key", blocks_task("cancel_task", DEAD, wallet=KEY), SecretInWrongFieldError, "wallet"),
    Case("reclaim-short", blocks_task("reclaim_expired", ["0x12"]), InvalidInputError, "tasks[0]"),
    Case("reclaim-a-str", blocks_task("reclaim_expired", DEAD), InvalidInputError, "tasks"),
    Case("reclaim-key", blocks_task("reclaim_expired", [DEAD, KEY]), SecretInWrongFieldError, "tasks[1]"),
    Case("deposit-zero", blocks_task("deposit_to_vault", 0), InvalidInputError, "amount"),
    Case("deposit-negative", blocks_task("deposit_to_vault", -1), InvalidInputError, "amount"),
    Case("deposit-float", blocks_task("deposit_to_vault", 1.5), InvalidInputError, "amount"),
    Case("deposit-bool", blocks_task("deposit_to_vault", True), InvalidInputError, "amount"),
    Case("deposit-str", blocks_task("deposit_to_vault", "1"), InvalidInputError, "amount"),
    Case("deposit-2^256", blocks_task("deposit_to_vault", 2**256), InvalidInputError, "amount"),
    Case("deposit-key", blocks_task("deposit_to_vault", KEY), InvalidInputError, "amount"),
    Case("deposit-account-short", blocks_task("deposit_to_vault", 1, account="0x12"), InvalidInputError, "account"),
    Case("deposit-account-key", blocks_task("deposit_to_vault", 1, account=KEY), SecretInWrongFieldError, "account"),
    Case("deposit-wallet-key", blocks_task("deposit_to_vault", 1, wallet=KEY), SecretInWrongFieldError, "wallet"),
    Case("withdraw-zero", blocks_task("withdraw_from_vault", 0), InvalidInputError, "amount"),
    Case("lock-negative", blocks_task("lock_stake", -1), InvalidInputError, "amount"),
    Case("unbond-str", blocks_task("unbond_stake", "x"), InvalidInputError, "amount"),
    Case("claim-network-key", blocks_task("claim_unbonded", network=KEY), SecretInWrongFieldError, "network"),
    Case("source-spec-str", blocks_task("publish_source", "x", storage=None), InvalidInputError, "spec"),
    Case(
        "source-spec-missing",
        lambda w: tasks_mod().publish_source.fn({"name": "x", "cpu": URL}, *w.blocks()),
        InvalidInputError,
        "spec.min_payment",
    ),
    Case(
        "source-spec-delivery",
        lambda w: tasks_mod().publish_source.fn(spec(delivery_method="bogus"), *w.blocks()),
        InvalidInputError,
        "spec.delivery_method",
    ),
    Case(
        "source-spec-key",
        lambda w: tasks_mod().publish_source.fn(spec(logo_url=KEY), *w.blocks()),
        SecretInWrongFieldError,
        "spec",
    ),
    Case(
        "source-spec-no-env",
        lambda w: tasks_mod().publish_source.fn(spec(cpu=""), *w.blocks()),
        InvalidInputError,
        "cpu/nvidia/amd",
    ),
    Case(
        "update-source-key",
        lambda w: tasks_mod().update_source.fn(KEY, spec(), *w.blocks()),
        SecretInWrongFieldError,
        "source",
    ),
    Case("inactivate-short", blocks_task("inactivate_source", "0x12"), UnknownSourceInputError, "source"),
]


@pytest.mark.parametrize("case", TASKS, ids=ids(TASKS))
def test_tasks(world: World, case: Case) -> None:
    check(world, case)


# ---- the run_batch flow (through Prefect: parameters, state, hooks) ----


def run(**over: Any) -> Callable[[World], Any]:
    def call(w: World) -> Any:
        from ogpu_prefect.flows.run_batch import run_batch

        args: dict[str, Any] = {
            "source": w.source,
            "inputs": [{"i": 1}, {"i": 2}],
            "payment": PAYMENT,
            "network": w.network,
            "wallet": w.wallet,
            "storage": w.storage,
            "function_name": "echo",
            "max_republish": 0,
            "task_timeout": 120,
        }
        args.update({k: v(w) if callable(v) else v for k, v in over.items()})
        state = run_batch(**args, return_state=True)
        assert KEY_HEX not in str(state.message).lower(), "the key is in the flow run's state message"
        return state.result()

    return call


FLOWS = [
    Case("source-short", run(source="0x12"), UnknownSourceInputError, "source"),
    Case("source-key", run(source=KEY), SecretInWrongFieldError, "source"),
    Case("source-int", run(source=123), InvalidInputError, "source"),
    Case("source-unknown", run(source=DEAD), UnknownSourceInputError, "source"),
    Case("source-inactive", run(source=lambda w: w.inactive_source), SourceNotActiveInputError, "source"),
    Case("inputs-empty", run(inputs=[]), InvalidInputError, "inputs"),
    Case("inputs-str", run(inputs="abc"), InvalidInputError, "inputs"),
    Case("inputs-key", run(inputs=[{"i": 1}, KEY]), SecretInWrongFieldError, "inputs[1]"),
    Case("inputs-set", run(inputs=[{"ok": 1}, {"bad": {1, 2}}]), InvalidInputError, "inputs[1].data"),
    Case("inputs-no-function", run(inputs=[1, 2], function_name=None), InvalidInputError, "inputs[0]"),
    Case("payment-negative", run(payment=-1), InvalidInputError, "payment"),
    Case("payment-float", run(payment=1.5), InvalidInputError, "payment"),
    Case("payment-2^96", run(payment=2**96), InvalidInputError, "payment"),
    Case("payment-below-min", run(payment=10**10), PaymentOutOfRangeError, "payment"),
    Case("payment-over-balance", run(payment=2000 * ETHER), BalanceTooLowError, "payment"),
    Case("payment-key", run(payment=KEY), SecretInWrongFieldError, "payment"),
    Case("function-key", run(function_name=KEY), SecretInWrongFieldError, "function_name"),
    Case("function-empty", run(function_name=""), InvalidInputError, "function_name"),
    Case("delivery-unknown", run(delivery="fastest"), InvalidInputError, "delivery"),
    Case("delivery-manual-on-first-response", run(delivery="manual"), DeliveryMismatchError, "delivery"),
    Case(
        "delivery-first-response-on-manual",
        run(source=lambda w: w.manual_source),
        DeliveryMismatchError,
        "delivery",
    ),
    Case("options-str", run(delivery_options="k=2"), InvalidInputError, "delivery_options"),
    Case(
        "options-policy-key",
        run(source=lambda w: w.manual_source, delivery="manual", delivery_options={"policy": KEY}),
        SecretInWrongFieldError,
        "delivery_options",
    ),
    Case(
        "options-window-str",
        run(source=lambda w: w.manual_source, delivery="auction", delivery_options={"window": "5s"}),
        InvalidInputError,
        "delivery_options.window",
    ),
    Case("timeout-short", run(task_timeout=5), ExpiryOutOfRangeError, "task_timeout"),
    Case("timeout-negative", run(task_timeout=-100), ExpiryOutOfRangeError, "task_timeout"),
    Case("timeout-beyond-max", run(task_timeout=10_000), ExpiryOutOfRangeError, "task_timeout"),
    Case("timeout-str", run(task_timeout="2m"), InvalidInputError, "task_timeout"),
    Case("deadline-short", run(batch_deadline=5), ExpiryOutOfRangeError, "batch_deadline"),
    Case("republish-negative", run(max_republish=-1), InvalidInputError, "max_republish"),
    Case("republish-101", run(max_republish=101), InvalidInputError, "max_republish"),
    Case("budget-negative", run(budget=-1), InvalidInputError, "budget"),
    Case("budget-exceeded", run(budget=PAYMENT), BudgetExceededError, "budget"),
    Case("poll-zero", run(poll_interval=0), InvalidInputError, "poll_interval"),
    Case("poll-nan", run(poll_interval=math.nan), InvalidInputError, "poll_interval"),
    Case("batch-key-key", run(batch_key=KEY), SecretInWrongFieldError, "batch_key"),
    Case("batch-key-conflict", run(batch_key=lambda w: w.conflict_key), BatchKeyConflictError, "batch_key"),
    Case("network-key", run(network=KEY), SecretInWrongFieldError, "network"),
    Case("network-missing", run(network="no-such-network"), InvalidInputError, "network"),
    Case("wallet-key", run(wallet=KEY), SecretInWrongFieldError, "wallet"),
    Case("wallet-none", run(wallet=None), InvalidInputError, "wallet"),
    Case("storage-key", run(storage=KEY), SecretInWrongFieldError, "storage"),
    Case("storage-no-write-url", run(storage=lambda w: fsspec_without_url()), InvalidInputError, "write_url"),
]


@pytest.mark.parametrize("case", FLOWS, ids=ids(FLOWS))
def test_flow(world: World, case: Case) -> None:
    check(world, case)


# ---- blocks (pydantic: the field is the error's loc) ----


def network_block(**over: Any) -> Callable[[Offline], Any]:
    def call(w: Offline) -> Any:
        return OGPUNetwork(**{**w.network.model_dump(), **over})

    return call


def storage_block(**over: Any) -> Callable[[Offline], Any]:
    return lambda w: OGPUStorage(**{"write_url": "memory://bad-input", **over})


BLOCKS = [
    Case("rpc-key", network_block(rpc_url=KEY), ValidationError, "rpc_url"),
    Case("rpc-empty", network_block(rpc_url=""), ValidationError, "rpc_url"),
    Case("rpc-no-scheme", network_block(rpc_url="localhost:8545"), ValidationError, "rpc_url"),
    Case("rpc-ftp", network_block(rpc_url="ftp://localhost:8545"), ValidationError, "rpc_url"),
    Case("rpc-int", network_block(rpc_url=8545), ValidationError, "rpc_url"),
    Case("chain-id-zero", network_block(chain_id=0), ValidationError, "chain_id"),
    Case("chain-id-negative", network_block(chain_id=-1), ValidationError, "chain_id"),
    Case("chain-id-str", network_block(chain_id="devnet"), ValidationError, "chain_id"),
    Case("chain-id-bool", network_block(chain_id=True), ValidationError, "chain_id"),
    Case("chain-id-float", network_block(chain_id=1.5), ValidationError, "chain_id"),
    Case("chain-id-key", network_block(chain_id=KEY), ValidationError, "chain_id"),
    Case("nexus-short", network_block(nexus="0x12"), ValidationError, "nexus"),
    Case("nexus-key", network_block(nexus=KEY), ValidationError, "nexus"),
    Case("controller-bare-key", network_block(controller=KEY[2:]), ValidationError, "controller"),
    Case("terminal-none", network_block(terminal=None), ValidationError, "terminal"),
    Case("vault-empty", network_block(vault=""), ValidationError, "vault"),
    Case("vault-not-hex", network_block(vault="0x" + "zz" * 20), ValidationError, "vault"),
    Case("manager-short", network_block(manager="0x12"), ValidationError, "manager"),
    Case("manager-key", network_block(manager=KEY), ValidationError, "manager"),
    Case("name-key", network_block(name=KEY), ValidationError, "name"),
    Case("name-empty", network_block(name=""), ValidationError, "name"),
    Case("wallet-short-key", lambda w: OGPUWallet(private_key=KEY[:-1]), ValidationError, "private_key"),
    Case("wallet-long-key", lambda w: OGPUWallet(private_key=KEY + "0"), ValidationError, "private_key"),
    Case("wallet-zero-key", lambda w: OGPUWallet(private_key="0x" + "00" * 32), ValidationError, "private_key"),
    Case("wallet-order-key", lambda w: OGPUWallet(private_key="0x" + "ff" * 32), ValidationError, "private_key"),
    Case("wallet-non-hex-key", lambda w: OGPUWallet(private_key=KEY[:-1] + "g"), ValidationError, "private_key"),
    Case("wallet-int-key", lambda w: OGPUWallet(private_key=int(KEY, 16)), ValidationError, "private_key"),
    Case("wallet-empty-key", lambda w: OGPUWallet(private_key=""), ValidationError, "private_key"),
    Case("wallet-address", lambda w: OGPUWallet(private_key=DEAD), ValidationError, "private_key"),
    Case("wallet-none", lambda w: OGPUWallet(private_key=None), ValidationError, "private_key"),
    Case("storage-kind-s3", storage_block(kind="s3"), ValidationError, "kind"),
    Case("storage-kind-key", storage_block(kind=KEY), ValidationError, "kind"),
    Case("storage-write-key", storage_block(write_url=KEY), ValidationError, "write_url"),
    Case("storage-write-empty", storage_block(write_url=""), ValidationError, "write_url"),
    Case("storage-write-protocol", storage_block(write_url="nope://bucket"), ValidationError, "write_url"),
    Case("storage-write-int", storage_block(write_url=123), ValidationError, "write_url"),
    Case("storage-read-key", storage_block(read_url=KEY), ValidationError, "read_url"),
    Case("storage-read-no-scheme", storage_block(read_url="payloads/"), ValidationError, "read_url"),
    Case("storage-ipfs-key", storage_block(kind="ipfs", ipfs_api_url=KEY), ValidationError, "ipfs_api_url"),
    Case("storage-ipfs-ftp", storage_block(kind="ipfs", ipfs_api_url="ftp://x/up"), ValidationError, "ipfs_api_url"),
    Case("storage-origins-key", storage_block(result_origins=[KEY]), ValidationError, "result_origins"),
    Case("storage-origins-str", storage_block(result_origins="http://x/"), ValidationError, "result_origins"),
    Case("storage-origins-no-scheme", storage_block(result_origins=["x/"]), ValidationError, "result_origins"),
    Case("storage-options-str", storage_block(storage_options="anon=true"), ValidationError, "storage_options"),
    Case("storage-block-no-url", lambda w: OGPUStorage(kind="fsspec").store(), InvalidInputError, "write_url"),
]


@pytest.mark.parametrize("case", BLOCKS, ids=ids(BLOCKS))
def test_blocks(case: Case) -> None:
    check(offline(), case)


# ---- storage ----


def cj(value: Any, field: str = "inputs[0].data") -> Callable[[World], Any]:
    from ogpu_prefect.storage import canonical_json

    return lambda w: canonical_json(value, field=field)


def fsspec(*args: Any, **kwargs: Any) -> Callable[[World], Any]:
    from ogpu_prefect.storage import FsspecStore

    return lambda w: FsspecStore(*args, **kwargs)


def ipfs(**kwargs: Any) -> Callable[[World], Any]:
    from ogpu_prefect.storage import IpfsStore

    return lambda w: IpfsStore(**kwargs)


def _circular() -> list[Any]:
    loop: list[Any] = []
    loop.append(loop)
    return loop


STORAGE = [
    Case("json-set", cj({1, 2}), InvalidInputError, "inputs[0].data"),
    Case("json-nan", cj(math.nan, "result"), InvalidInputError, "result"),
    Case("json-inf", cj(math.inf), InvalidInputError, "inputs[0].data"),
    Case("json-nested-inf", cj({"a": [-math.inf]}), InvalidInputError, "inputs[0].data"),
    Case("json-object", cj(object(), "metadata"), InvalidInputError, "metadata"),
    Case("json-bytes", cj(b"bytes"), InvalidInputError, "inputs[0].data"),
    Case("json-tuple-key", cj({(1, 2): 3}), InvalidInputError, "inputs[0].data"),
    Case("json-circular", cj(_circular()), InvalidInputError, "inputs[0].data"),
    Case("json-too-big", cj("x" * 600_000), InvalidInputError, "inputs[0].data"),
    Case("json-too-big-nested", cj([["y" * 1000] * 600]), InvalidInputError, "inputs[0].data"),
    Case("fsspec-protocol", fsspec("nope://bucket"), InvalidInputError, "write_url"),
    Case("fsspec-key", fsspec(KEY), SecretInWrongFieldError, "write_url"),
    Case("fsspec-empty", fsspec(""), InvalidInputError, "write_url"),
    Case("fsspec-int", fsspec(123), InvalidInputError, "write_url"),
    Case("fsspec-read-key", fsspec("memory://bad-input", KEY), SecretInWrongFieldError, "read_url"),
    Case("fsspec-read-no-scheme", fsspec("memory://bad-input", "payloads"), InvalidInputError, "read_url"),
    Case("fsspec-options-str", fsspec("memory://bad-input", None, "anon"), InvalidInputError, "storage_options"),
    Case(
        "fsspec-put-set",
        lambda w: fsspec("memory://bad-input")(w).put_json({1}, field="metadata"),
        InvalidInputError,
        "metadata",
    ),
    Case("ipfs-key", ipfs(api_url=KEY), SecretInWrongFieldError, "api_url"),
    Case("ipfs-ftp", ipfs(api_url="ftp://x/up"), InvalidInputError, "api_url"),
    Case("ipfs-empty", ipfs(api_url=""), InvalidInputError, "api_url"),
    Case("ipfs-timeout-zero", ipfs(timeout=0), InvalidInputError, "timeout"),
    Case("ipfs-timeout-nan", ipfs(timeout=math.nan), InvalidInputError, "timeout"),
    Case("ipfs-retries-zero", ipfs(retries=0), InvalidInputError, "retries"),
    Case("ipfs-backoff-negative", ipfs(backoff=-1), InvalidInputError, "backoff"),
    Case(
        "ipfs-put-nan",
        lambda w: ipfs(api_url="http://127.0.0.1:9/up")(w).put_json(math.nan, field="result"),
        InvalidInputError,
        "result",
    ),
]


@pytest.mark.parametrize("case", STORAGE, ids=ids(STORAGE))
def test_storage(case: Case) -> None:
    check(offline(), case)


# ---- the ogpu-provider work pool's job variables ----

JOB_VARIABLES: list[tuple[str, dict[str, Any], str]] = [
    ("poll-zero", {"poll_interval_s": 0}, "poll_interval_s"),
    ("poll-negative", {"poll_interval_s": -1}, "poll_interval_s"),
    ("poll-too-slow", {"poll_interval_s": 61}, "poll_interval_s"),
    ("poll-nan", {"poll_interval_s": math.nan}, "poll_interval_s"),
    ("poll-str", {"poll_interval_s": "fast"}, "poll_interval_s"),
    ("lookback-negative", {"lookback_blocks": -1}, "lookback_blocks"),
    ("lookback-float", {"lookback_blocks": 1.5}, "lookback_blocks"),
    ("lookback-bool", {"lookback_blocks": True}, "lookback_blocks"),
    ("idle-zero", {"idle_timeout_s": 0}, "idle_timeout_s"),
    ("idle-negative", {"idle_timeout_s": -5}, "idle_timeout_s"),
    ("idle-inf", {"idle_timeout_s": math.inf}, "idle_timeout_s"),
    ("runtime-zero", {"max_runtime_s": 0}, "max_runtime_s"),
    ("runtime-negative", {"max_runtime_s": -1}, "max_runtime_s"),
    ("runtime-inf", {"max_runtime_s": math.inf}, "max_runtime_s"),
    ("concurrency-zero", {"max_concurrent_tasks": 0}, "max_concurrent_tasks"),
    ("concurrency-negative", {"max_concurrent_tasks": -1}, "max_concurrent_tasks"),
    ("concurrency-1025", {"max_concurrent_tasks": 1025}, "max_concurrent_tasks"),
    ("concurrency-bool", {"max_concurrent_tasks": True}, "max_concurrent_tasks"),
    ("backend-unknown", {"backend": "kubernetes"}, "backend"),
    ("backend-key", {"backend": KEY}, "backend"),
    ("backend-empty", {"backend": ""}, "backend"),
    ("policy-unknown", {"task_policy": "greedy"}, "task_policy"),
    ("policy-key", {"task_policy": KEY}, "task_policy"),
    ("environment-tpu", {"environment": "tpu"}, "environment"),
    ("environment-key", {"environment": KEY}, "environment"),
    ("sources-short", {"sources": ["0x12"]}, "sources"),
    ("sources-key", {"sources": [KEY]}, "sources"),
    ("sources-bare-key", {"sources": [DEAD, KEY[2:]]}, "sources"),
    ("sources-a-str", {"sources": DEAD}, "sources"),
    ("sources-int", {"sources": [123]}, "sources.0"),
    ("providers-short", {"providers": ["0x12"]}, "providers"),
    ("providers-key", {"providers": [DEAD, KEY]}, "providers"),
    ("providers-a-str", {"providers": DEAD}, "providers"),
    ("network-block-key", {"network_block": KEY}, "network_block"),
    ("network-block-empty", {"network_block": ""}, "network_block"),
    ("wallet-block-key", {"wallet_block": KEY}, "wallet_block"),
    ("wallet-block-int", {"wallet_block": 5}, "wallet_block"),
    ("storage-block-key", {"storage_block": KEY[2:]}, "storage_block"),
    ("stake-negative", {"stake_wei": -1}, "stake_wei"),
    ("stake-bool", {"stake_wei": True}, "stake_wei"),
    ("stake-float", {"stake_wei": 1.5}, "stake_wei"),
    ("stake-key", {"stake_wei": KEY}, "stake_wei"),
    ("backend-options-key", {"backend_options": {"token": KEY}}, "backend_options"),
    ("backend-options-str", {"backend_options": "gpu=1"}, "backend_options"),
    ("policy-options-key", {"task_policy_options": {"min": [KEY]}}, "task_policy_options"),
    ("policy-options-list", {"task_policy_options": [1]}, "task_policy_options"),
    ("warm-str", {"warm_on_start": "maybe"}, "warm_on_start"),
    ("records-unknown", {"records": "every_line"}, "records"),
    ("records-key", {"records": KEY}, "records"),
    ("policy-options-bogus", {"task_policy_options": {"min_pay": 1}}, "task_policy_options"),
    (
        "policy-options-range",
        {"task_policy": "threshold", "task_policy_options": {"price_fraction": 5}},
        "task_policy_options",
    ),
    ("backend-options-bogus", {"backend_options": {"gpus": 2}}, "backend_options"),
    ("backend-options-owner", {"backend_options": {"owner": DEAD}}, "backend_options"),
    ("backend-options-type", {"backend": "docker", "backend_options": {"build": "yes"}}, "backend_options"),
]


@pytest.mark.parametrize("kind", ["variables", "configuration"])
@pytest.mark.parametrize("case", JOB_VARIABLES, ids=[c[0] for c in JOB_VARIABLES])
def test_job_variables(case: tuple[str, dict[str, Any], str], kind: str) -> None:
    from ogpu_prefect.worker.configuration import ProviderJobConfiguration, ProviderVariables

    cls = ProviderVariables if kind == "variables" else ProviderJobConfiguration
    name, values, field = case
    check(offline(), Case(name, lambda w: cls(**values), ValidationError, field))


# ---- CLI parsing ----
# Written against the CLI the lead engineer is rewriting (ogpu_prefect/cli.py): argparse-style
# refusals (exit code 2, the option named on stderr, the value not echoed when it is a key).
# Parsing only: a command that parses is not run (it would start a devnet).

CLI: list[tuple[str, list[str], str]] = [
    ("port-negative", ["devnet", "up", "--port", "-1"], "--port"),
    ("port-70000", ["devnet", "up", "--port", "70000"], "--port"),
    ("port-65536", ["devnet", "up", "--port", "65536"], "--port"),
    ("port-str", ["devnet", "up", "--port", "abc"], "--port"),
    ("port-key", ["devnet", "up", "--port", KEY], "--port"),
    ("tasks-negative", ["demo", "--tasks", "-5"], "--tasks"),
    ("tasks-zero", ["demo", "--tasks", "0"], "--tasks"),
    ("tasks-str", ["demo", "--tasks", "many"], "--tasks"),
    ("tasks-float", ["demo", "--tasks", "1.5"], "--tasks"),
]


@pytest.mark.parametrize("case", CLI, ids=[c[0] for c in CLI])
def test_cli(case: tuple[str, list[str], str], capsys: pytest.CaptureFixture[str]) -> None:
    from ogpu_prefect.cli import build_parser

    name, argv, option = case
    with pytest.raises(SystemExit) as info:
        parsed = build_parser().parse_args(argv)
        pytest.fail(f"{name}: accepted as {argparse.Namespace(**vars(parsed))}")
    err = capsys.readouterr().err
    assert info.value.code == 2, f"{name}: exit code {info.value.code}"
    last = [line for line in err.splitlines() if line.strip()][-1]
    assert option in last and "error" in last, f"{name}: {err!r}"
    assert KEY_HEX not in err.lower(), f"{name}: the key is echoed"


# ---- rough answers (issue 20): each was a raw RpcError / ValueError / aiohttp error, or accepted ----


def near_forms(key: str) -> list[str]:
    """A key as people paste it: quoted, a .env line, `0X`, a trailing comma, upper case, no 0x."""
    bare = key[2:]
    return [f'"{key}"', f"PRIVATE_KEY={key}", "0X" + bare, key + ",", key.upper(), bare, f"key: {bare.upper()}!"]


def network_with(**over: Any) -> Callable[[World], Any]:
    from dataclasses import asdict

    return lambda w: Network(**{**asdict(w.devnet.network), **over})


def profile_with(**contracts: Any) -> Callable[[World], Any]:
    def call(w: World) -> Any:
        profile = w.devnet.profile
        return Network.from_profile({**profile, "contracts": {**profile["contracts"], **contracts}})

    return call


def wrong_chain_publish(w: World) -> Any:
    from dataclasses import replace

    from ogpu_prefect.chain.connection import Chain
    from ogpu_prefect.client import OGPUClient

    chain = Chain(replace(w.devnet.network, chain_id=w.devnet.network.chain_id + 1))
    client = OGPUClient(chain, w.devnet.key("client"), w.ctx.store)
    return client.publish_tasks(w.source, [task_input()], PAYMENT, w.chain.now() + 300)


def unreachable_storage_publish(w: World) -> Any:
    from ogpu_prefect.client import OGPUClient
    from ogpu_prefect.storage import FsspecStore

    client = OGPUClient(w.chain, w.devnet.key("client"), FsspecStore("http://127.0.0.1:9/payloads"))
    return client.publish_tasks(w.source, [task_input()], PAYMENT, w.chain.now() + 300)


def standing(sources: Any = None, **kwargs: Any) -> Callable[[World], Any]:
    """A provider's ensure_standing; its own money must not move either."""

    def call(w: World) -> Any:
        from ogpu_prefect.chain.connection import Chain
        from ogpu_prefect.chain.types import Environment
        from ogpu_prefect.plugin_manager import PluginKind, create
        from ogpu_prefect.worker.provider import Provider

        who = w.devnet.address("provider3")
        before = (w.chain.vault.lockup_of(who), w.chain.rpc.call("eth_getTransactionCount", [who, "latest"]))
        provider = Provider(
            Chain(w.devnet.network),
            w.devnet.key("provider3"),
            w.ctx.store,
            create(PluginKind.HARDWARE_BACKEND, "local"),
            Environment.CPU,
        )
        try:
            return provider.ensure_standing([w.source] if sources is None else sources, **kwargs)
        finally:
            after = (w.chain.vault.lockup_of(who), w.chain.rpc.call("eth_getTransactionCount", [who, "latest"]))
            assert after == before, "the provider's wei moved"

    return call


ROUGH = [
    Case("network-wrong-chain-id", wrong_chain_publish, InvalidInputError, "chain_id"),
    Case("network-nexus-short", network_with(nexus="0x123"), InvalidInputError, "nexus"),
    Case("network-vault-key", network_with(vault=KEY), InvalidInputError, "vault"),
    Case("network-vault-quoted-key", network_with(vault=f'"{KEY}"'), InvalidInputError, "vault"),
    Case("network-chain-id-str", network_with(chain_id="1"), InvalidInputError, "chain_id"),
    Case("profile-vault-key", profile_with(Vault=KEY), InvalidInputError, "vault"),
    Case("profile-no-contracts", lambda w: Network.from_profile({}), InvalidInputError, "profile"),
    Case("confirm-random-address", lambda w: w.client.confirm_responses([DEAD]), InvalidInputError, "responses[0]"),
    Case("storage-unreachable-http", unreachable_storage_publish, InvalidInputError, "write_url"),
    Case("standing-not-an-address", standing(["not-an-address"]), InvalidInputError, "sources[0]"),
    Case("standing-stake-2^100", standing(stake=2**100), InvalidInputError, "stake"),
    Case("standing-stake-beyond-wallet", standing(stake=10**27), InvalidInputError, "stake"),
    Case("standing-stake-negative", standing(stake=-5), InvalidInputError, "stake"),
]


@pytest.mark.parametrize("case", ROUGH, ids=ids(ROUGH))
def test_rough_answers(world: World, case: Case) -> None:
    check(world, case)


FLOWS_NEAR = ["function_name", "wallet", "batch_key", "inputs[1]"]  # fields that take no key


@pytest.mark.parametrize("form", range(len(near_forms(KEY))))
@pytest.mark.parametrize("field", FLOWS_NEAR)
def test_a_key_in_any_form_is_refused_unechoed_and_not_stored(world: World, field: str, form: int) -> None:
    """run_batch with the client's key, pasted in a near form, in a field that is no key: refused
    naming the field, and Prefect's stored parameters, state message and logs do not hold it."""
    from prefect.client.orchestration import get_client

    value = near_forms(KEY)[form]
    over = {"inputs": [{"i": 1}, value]} if field == "inputs[1]" else {field: value}
    check(world, Case(f"{field}-{form}", run(**over), SecretInWrongFieldError, field))
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(limit=1, sort="EXPECTED_START_TIME_DESC")
        logs = client.read_logs()
    stored = str(runs[0].parameters) + str(runs[0].state.message if runs[0].state else "")
    assert KEY_HEX not in stored.lower(), "the key is stored in Prefect"
    assert not any(KEY_HEX in log.message.lower() for log in logs), "the key is in Prefect's logs"


def test_a_key_pasted_near_an_address_on_the_cli_is_not_echoed(
    world: World, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """`ogpu-prefect vault balance "0x<key>,"` printed the key in its error."""
    import json

    from ogpu_prefect.cli import main

    profile = tmp_path / "devnet.json"
    profile.write_text(json.dumps(world.devnet.profile))
    for value in near_forms(KEY):
        assert main(["vault", "balance", value, "--network", str(profile)]) == 2
        out = capsys.readouterr()
        assert "ADDRESS" in out.err and KEY_HEX not in (out.err + out.out).lower(), value


def test_a_key_file_holds_a_key_as_people_keep_it(
    world: World, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """A key file in a near form (a .env line, quoted, 0X, a trailing comma) signs as that key."""
    import json

    from ogpu_prefect.cli import main

    profile = tmp_path / "devnet.json"
    profile.write_text(json.dumps(world.devnet.profile))
    key_file = tmp_path / "key"
    for value in [f'PRIVATE_KEY="{KEY}"\n', "0X" + KEY[2:], KEY + ","]:
        key_file.write_text(value)
        key_file.chmod(0o600)
        assert main(["vault", "balance", "--key-file", str(key_file), "--network", str(profile), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["address"] == world.addr


def test_a_pool_with_bogus_options_stops_the_worker_at_start(world: World) -> None:
    """Before: accepted in the pool, then a TypeError when the worker built its plugins."""
    import asyncio

    from prefect.client.orchestration import get_client

    from ogpu_prefect.worker.configuration import JobVariableError, ProviderJobConfiguration
    from ogpu_prefect.worker.worker import OGPUProviderWorker

    template = OGPUProviderWorker.get_default_base_job_template()
    template["variables"]["properties"]["task_policy_options"]["default"] = {"min_pay": 1}

    async def start() -> Any:
        async with get_client() as client:
            return await ProviderJobConfiguration.for_worker(template, client)

    with pytest.raises(JobVariableError) as e:
        asyncio.run(start())
    assert e.value.field == "task_policy_options"


def test_devnet_status_json_is_an_object_when_none_runs(
    tmp_path: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`devnet status --json` printed `null`."""
    import json

    from ogpu_prefect.cli import main

    monkeypatch.setenv("PREFECT_INTEGRATIONS_OGPU_HOME", str(tmp_path))
    assert main(["devnet", "status", "--json"]) == 1
    assert json.loads(capsys.readouterr().out) == {"running": False}


# ---- the count ----


def test_at_least_150_distinct_bad_inputs() -> None:
    tables = {
        "rough answers": ids(ROUGH),
        "keys in any form": [f"{f}-{i}" for f in FLOWS_NEAR for i in range(len(near_forms(KEY)))],
        "client": ids(CLIENT),
        "tasks": ids(TASKS),
        "flows": ids(FLOWS),
        "blocks": ids(BLOCKS),
        "storage": ids(STORAGE),
        "job variables": [c[0] for c in JOB_VARIABLES],
        "cli": [c[0] for c in CLI],
    }
    for surface, names in tables.items():
        assert len(names) == len(set(names)), f"duplicate ids in {surface}"
    assert sum(len(n) for n in tables.values()) >= 150, {k: len(v) for k, v in tables.items()}
