"""The result cache as the batch engine's port (result_cache.ResultCache in the flows): an input
answered before is emitted from it, never published or paid; each input finalized fills it. On the
honest fake chain (tests/unit/fake_market.py), in both modes of the window: run_batch's rounds
(through task_ports.Answered, the lookup it makes once before the batch) and streaming. No anvil,
no Prefect."""

from __future__ import annotations

import json
from typing import Any

from ogpu_prefect.engine import Limits, Window
from ogpu_prefect.models import TaskInput, TaskResult
from ogpu_prefect.task_ports import Answered

from .fake_market import Act, FakeClock, FakeLedger, FakeMarket, FakeTracker, items
from .test_engine_rounds import PAY, audited, batch


class DictCache:
    """What ResultCache offers the engine, in a dict (ResultCache itself is Prefect's result store)."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    @staticmethod
    def key(item: TaskInput) -> str:
        return json.dumps(item.model_dump(mode="json"), sort_keys=True)

    def get(self, item: TaskInput) -> tuple[bool, Any]:
        k = self.key(item)
        return (k in self.data, self.data.get(k))

    def fill(self, item: TaskInput, result: Any) -> None:
        self.data[self.key(item)] = result


def market(script: Any = None) -> FakeMarket:
    return FakeMarket(FakeClock(), script=script or (lambda i, a: Act(after=1 + i % 3)))


def looked_up(cache: DictCache, inputs: list[TaskInput]) -> Answered:
    """What run_batch gives the window: the hits of one lookup, and the cache to fill."""
    found = {i: cache.get(x)[1] for i, x in enumerate(inputs) if cache.get(x)[0]}
    return Answered(cache.key, found, inputs, cache.fill)


def test_rounds_publish_only_what_the_cache_has_not_answered_and_fill_it() -> None:
    m, cache = market(), DictCache()
    inputs = items(6)
    for i in (0, 2, 4):
        cache.fill(inputs[i], {"answer": i})
    out, ledger = batch(m, 6, cache=looked_up(cache, inputs))
    assert [r.status for r in out.results] == ["finalized"] * 6
    assert [r.cached for r in out.results] == [True, False, True, False, True, False]
    assert [out.results[i].result for i in (0, 2, 4)] == [{"answer": 0}, {"answer": 2}, {"answer": 4}]
    assert len(m.tasks) == 3 and m.paid == 3 * PAY, "only the three unanswered inputs were published and paid"
    assert all(cache.get(x)[0] for x in inputs), "what was paid for is in the cache"
    audited(m, out)
    again, _ = batch(market(), 6, key="b2", cache=looked_up(cache, inputs))
    assert all(r.cached for r in again.results)


def test_a_fully_answered_batch_publishes_nothing() -> None:
    m, cache, inputs = market(), DictCache(), items(4)
    for i, x in enumerate(inputs):
        cache.fill(x, {"i": i})
    out, ledger = batch(m, 4, cache=looked_up(cache, inputs))
    assert m.publish_calls == 0 and m.vault == m.initial and ledger.tasks == []
    assert [r.result for r in out.results] == [{"i": i} for i in range(4)]


def test_the_window_emits_cached_inputs_without_publishing_and_fills_the_cache() -> None:
    m, cache, inputs = market(), DictCache(), items(10)
    for i in range(0, 10, 2):
        cache.fill(inputs[i], {"cached": i})
    done: dict[int, TaskResult] = {}

    def emit(r: TaskResult) -> None:
        assert r.index not in done
        done[r.index] = r

    w = Window(
        m,
        FakeTracker(m),
        FakeLedger(m),
        Limits(PAY, 60, 3, 1, None, None, 0.5),
        emit,
        key="s",
        clock=m.clock,
        cache=cache,
    )
    w.run(iter(enumerate(inputs)))
    assert sorted(done) == list(range(10)) and {r.status for r in done.values()} == {"finalized"}
    assert [done[i].cached for i in range(10)] == [i % 2 == 0 for i in range(10)]
    assert len(m.tasks) == 5 and m.paid == 5 * PAY
    assert all(cache.get(x)[0] for x in inputs)
    assert m.balanced() and m.stranded() == 0 and m.duplicates() == 0
