"""A source's function as a Prefect task: `.submit`, `.map`, futures, retries and caching as for
any task, OpenGPU underneath.

```python
analyze = OGPUFunction(source, "analyze", payment="0.01 OGPU", network="devnet", wallet="client",
                       storage="payloads", retries=1)

@flow
def review(texts):
    futures = analyze.map(texts)            # one task run per input
    return [f.result() for f in futures]    # each: the service's result for that input
```

Each call is a task run with its own state and times. Underneath, the calls of this process
coalesce into pipelined publications and one waiting loop per network, source and wallet
(call_engine.py: the streaming flows' own loop), so a `.map` of 1,000 inputs costs about what
`run_batch` of them costs. A call that gives no result raises `CallFailedError` (a Prefect retry
publishes it once more, after its failed task's escrow was settled); a retry while its task is on
chain waits for that task. Answers are cached (result_cache.py) by network, source, function and
input: a later call, batch or flow with an answered input returns it without publishing
(`cache=False` to turn it off).
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Iterable
from typing import Any

from prefect import Task
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext

from .amounts import Amount, parse_amount
from .call_engine import ENGINES, CallEngine, CallFailedError
from .models import TaskInput
from .result_cache import CallKeys, ResultCache, network_identity
from .streaming import Limits
from .validation import check_address, check_int, check_name, check_number, parse_delivery

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 5000


class OGPUFunction:
    """The function `function_name` of the OpenGPU source `source`, called like a Prefect task:
    `submit(data)` -> PrefectFuture, `map(datas)` -> futures, `f(data)` inside a flow -> the
    result. The network, wallet and storage are blocks or the names of saved blocks; delivery,
    reputation and the task timeout are as in `run_batch`. `retries`, `retry_delay_seconds`,
    `timeout_seconds`, `tags` and `result_storage` are the task's Prefect options.
    """

    def __init__(
        self,
        source: str,
        function_name: str,
        *,
        payment: Amount,
        network: Any,
        wallet: Any,
        storage: Any,
        delivery: str = "first_response",
        delivery_options: dict[str, Any] | None = None,
        task_timeout: int = 300,
        max_in_flight: int = 1000,
        budget: Amount | None = None,
        poll_interval: float = 0.1,
        reputation: str | None = "default",
        reputation_options: dict[str, Any] | None = None,
        cache: bool = True,
        retries: int = 0,
        retry_delay_seconds: float = 0,
        timeout_seconds: float | None = None,
        tags: Iterable[str] | None = None,
        result_storage: Any = None,
    ) -> None:
        self.source = check_address("source", source)
        self.function_name = check_name("function_name", function_name)
        self.payment = parse_amount("payment", payment)
        self.budget = parse_amount("budget", budget) if budget is not None else None
        check_int("task_timeout", task_timeout, minimum=10)
        check_int("max_in_flight", max_in_flight, minimum=1, maximum=MAX_IN_FLIGHT)
        check_number("poll_interval", poll_interval, exclusive_minimum=0, maximum=60)
        parse_delivery(delivery, delivery_options)  # a bad method fails here, not in every call
        self.network, self.wallet, self.storage = network, wallet, storage
        self.delivery, self.delivery_options = delivery, delivery_options
        self.task_timeout, self.max_in_flight, self.poll_interval = task_timeout, max_in_flight, poll_interval
        self.reputation, self.reputation_options = reputation, reputation_options
        self._keys: CallKeys | None = None
        self._wallet_address: str | None = None
        self._loop_key: tuple[Any, ...] | None = None
        self._lock = threading.Lock()
        self.task: Task[..., Any] = Task(
            self._call,
            name=f"ogpu-{self.function_name}",
            task_run_name=f"ogpu-{self.function_name}-{{data!s:.40}}",
            tags=set(tags or ()),  # none by default: a tag costs a concurrency-limit call per run, cached too
            retries=retries,
            retry_delay_seconds=retry_delay_seconds,
            timeout_seconds=timeout_seconds,
            **(
                {"cache_key_fn": self._cache_key, "persist_result": True, "result_storage": result_storage}
                if cache
                else {"cache_policy": NO_CACHE}
            ),
        )

    def __repr__(self) -> str:
        return f"OGPUFunction({self.source!r}, {self.function_name!r})"

    # ---- the Prefect task's face ----

    def __call__(self, data: Any) -> Any:
        self._warm()
        return self.task(data)

    def submit(self, data: Any, **kwargs: Any) -> Any:
        """Runs one call as a task run; returns its PrefectFuture (`.result()`: the result)."""
        self._warm()
        return self.task.submit(data, **kwargs)

    def map(self, data: Iterable[Any], **kwargs: Any) -> Any:
        """One task run per input; returns their futures (a PrefectFutureList), in input order.
        The inputs are sent to the calls' loop at once, ahead of their task runs (which Prefect
        starts over seconds): one publication, as `run_batch` makes."""
        items = list(data)
        self._warm()
        if not kwargs:  # `wait_for` and the like: the calls wait for what they are told
            self._send_ahead(items)
        return self.task.map(items, **kwargs)

    def _send_ahead(self, data: list[Any]) -> None:
        """Inputs a task run of this flow will call with, sent to the loop now; never those the
        cache answers (their task runs do not call), nor when the caller chose result storage
        (the cache is then where only Prefect looks), nor when task runs run in other processes;
        any doubt (a storage error) sends nothing ahead."""
        from prefect.context import FlowRunContext
        from prefect.task_runners import ThreadPoolTaskRunner

        ctx = FlowRunContext.get()
        if ctx is None or ctx.flow_run is None or self.task.result_storage is not None:
            return
        if not isinstance(ctx.task_runner, ThreadPoolTaskRunner):  # task runs in other processes
            return  # (Dask, Ray) would not find the calls sent from this one, and publish again
        try:
            json.dumps(data)  # plain values only: a future's value is known when its task run starts
            keys = self.keys()
            items = [(keys.key(item), item) for item in map(self._item, data)]
            if self.task.cache_policy is not NO_CACHE:
                cache = ResultCache(keys)
                items = [(m, item) for m, item in items if not cache.has(item)]
            if items:
                ENGINES.precall(self._engine_key(), self._build, items, str(ctx.flow_run.id))
        except Exception as e:  # each call then sends itself (and fails, if it must, with the reason)
            log.debug("inputs not sent ahead: %s", e)

    def _warm(self) -> None:
        """The loop's process starts now, while Prefect starts the task runs (call_engine.py)."""
        try:
            ENGINES.warm(self._engine_key())
        except Exception:  # a bad block fails the calls themselves, with the block's error
            pass

    def with_options(self, **options: Any) -> Task[..., Any]:
        """The underlying task with other Prefect options (a name, retries, a timeout)."""
        return self.task.with_options(**options)

    # ---- underneath ----

    def _item(self, data: Any) -> TaskInput:
        return (
            TaskInput.coerce(data, self.function_name)
            if isinstance(data, TaskInput)
            else TaskInput(function_name=self.function_name, data=data)
        )

    def keys(self) -> CallKeys:
        """The cache keys of this function's network and source (one read of the genesis block)."""
        with self._lock:
            if self._keys is None:
                from .blocks import OGPUNetwork
                from .tasks import load_block

                chain = load_block(OGPUNetwork, self.network, "network").connect()
                self._keys = CallKeys(network_identity(chain), self.source)
            return self._keys

    def wallet_address(self) -> str:
        """The paying wallet's address (its block loaded once)."""
        with self._lock:
            if self._wallet_address is None:
                from .blocks import OGPUWallet
                from .tasks import load_block

                self._wallet_address = load_block(OGPUWallet, self.wallet, "wallet").address
            return self._wallet_address

    def _cache_key(self, context: Any, parameters: dict[str, Any]) -> str:
        return self.keys().key(self._item(parameters["data"]))

    def _engine_key(self) -> tuple[Any, ...]:
        """Which loop serves this function's calls: network, source, wallet and terms (once)."""
        with self._lock:
            if self._loop_key is not None:
                return self._loop_key
        wallet_address = self.wallet_address()
        options = json.dumps([self.delivery_options, self.reputation_options], sort_keys=True, default=str)
        key = (
            json.dumps(_network_fields(self.network), default=str),
            self.source.lower(),
            wallet_address.lower(),
            self.payment,
            self.delivery,
            options,
            self.reputation,
            self.task_timeout,
            self.max_in_flight,
            self.budget,
        )
        with self._lock:
            self._loop_key = key
        return key

    def _build(self) -> CallEngine:
        from .batch import check_source_fits
        from .batch_estimate import check_served
        from .call_loop import LoopSpec
        from .chain.signing import derive_secret
        from .reputation import parse_reputation
        from .reputation_store import SEAL_LABEL
        from .tasks import make_client

        client = make_client(self.network, self.wallet, self.storage)
        terms = client.source_terms(self.source)
        strategy = parse_delivery(self.delivery, self.delivery_options)
        check_source_fits(strategy, terms, self.task_timeout)
        check_served(client.chain, terms.address, warn=_warn)
        budget = self.budget if self.budget is not None else self.max_in_flight * self.payment
        limits = Limits(self.payment, self.task_timeout, self.max_in_flight, 0, budget, None, self.poll_interval)
        client.check_batch(terms, 1, self.payment, client.chain.now() + self.task_timeout)
        spec = LoopSpec(
            network=self.network,
            storage=self.storage,
            address=client.address,
            terms=terms,
            delivery=self.delivery,
            delivery_options=self.delivery_options,
            reputation=self.reputation,
            reputation_options=self.reputation_options,
            limits=limits,
            key=f"ogpu-calls-{uuid.uuid4().hex[:16]}",  # the batch mark in every task's config
            from_block=client.chain.block_number() + 1,
        )
        policy = parse_reputation(self.reputation, self.reputation_options)
        seal = derive_secret(client.sender.signer, SEAL_LABEL) if policy is not None else None
        cache = ResultCache(self.keys()) if self.task.cache_policy is not NO_CACHE else None
        return CallEngine(spec, client, seal=seal, cache=cache, process=ENGINES.take_spare())

    def _call(self, data: Any) -> Any:
        ctx = TaskRunContext.get()
        if ctx is None:
            raise RuntimeError("an OGPUFunction call runs as a Prefect task (inside a flow, or .submit)")
        run = ctx.task_run
        key = self._engine_key()
        flow_run = str(run.flow_run_id) if run.flow_run_id else None
        item = self._item(data)
        engine, call = ENGINES.call(key, self._build, str(run.id), item, flow_run, self.keys().key(item))
        result = engine.wait(call, interruptible=ctx.task.timeout_seconds is not None)
        if not result.ok:
            raise CallFailedError(
                f"{self.function_name} on {self.source} gave no result ({result.reason or result.status}): "
                f"{result.error or ''}".rstrip(": "),
                result,
            )
        return result.result


def _network_fields(network: Any) -> Any:
    """The network's identity for the engine key (a block's public fields, or its name)."""
    if hasattr(network, "model_dump"):
        return {k: v for k, v in network.model_dump().items() if "key" not in k and "secret" not in k}
    return network


def _warn(message: str, *args: Any) -> None:
    from prefect import get_run_logger

    get_run_logger().warning(message, *args)


__all__ = ["CallFailedError", "OGPUFunction"]
