"""The batch engine has no Prefect in it and one loop: no engine module imports prefect; running a
batch in each mode of the window (rounds, streaming) on the fake chain loads no Prefect module (so
a front-end other than a flow can drive it, and its tests need no Prefect server); and both modes
publish and wait in the same code (`Window._publish`, `Window.step`), the only places in the
engine that call a market's `publish` or a tracker's `poll`."""

from __future__ import annotations

import ast
import subprocess
import sys

from ogpu_prefect import engine
from ogpu_prefect.engine import Limits, Rounds, Window

from .fake_market import Act, FakeClock, FakeLedger, FakeMarket, FakeTracker, items
from .imports import PACKAGE

ENGINE = PACKAGE / "engine"

RUN_BOTH = """
import sys
from tests.unit.fake_market import Act, FakeClock, FakeLedger, FakeMarket, FakeTracker, items, rounds_ports
from ogpu_prefect.engine import Limits, Rounds, Window
from ogpu_prefect.task_ports import RoundTracker, TaskMarket

m = FakeMarket(FakeClock(), script=lambda i, a: Act("untaken") if a == 0 and i % 2 else Act())
publish, wait = rounds_ports(m, "k")
deadline = m.clock.t + 300
rounds = []
w = Window(TaskMarket(m.now, publish), RoundTracker(wait, m.now, deadline, m.clock), FakeLedger(m),
           Limits(10, 60, 4, 1, 40, deadline, 0.5), rounds.append, key="k", clock=m.clock, rounds=Rounds())
w.run(iter(enumerate(items(4))))
assert {r.status for r in rounds} == {"finalized"} and len(rounds) == 4
done = []
w = Window(m, FakeTracker(m), FakeLedger(m), Limits(10, 60, 2, 1, 20, None, 0.5), done.append, key="w", clock=m.clock)
w.run(iter(enumerate(items(6))))
assert len(done) == 6
print(sorted(n for n in sys.modules if n.split(".")[0] == "prefect"))
"""


def test_no_engine_module_imports_prefect() -> None:
    for path in sorted(ENGINE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            assert not any(n.split(".")[0] == "prefect" for n in names), f"{path.name} imports {names}"


def test_a_batch_of_each_kind_runs_with_no_prefect_module_loaded() -> None:
    out = subprocess.run(
        [sys.executable, "-c", RUN_BOTH], capture_output=True, text=True, cwd=PACKAGE.parent, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_engine_publishes_and_waits_in_one_place() -> None:
    """Every call of a port's `publish` or `poll` in engine/: one each, in the window."""
    callers: dict[str, list[str]] = {"publish": [], "poll": []}
    for path in sorted(ENGINE.glob("*.py")):
        tree = ast.parse(path.read_text())
        scopes = [(f"{path.stem}.{c.name}.", c.body) for c in tree.body if isinstance(c, ast.ClassDef)]
        for prefix, body in [(f"{path.stem}.", tree.body), *scopes]:
            for fn in [n for n in body if isinstance(n, ast.FunctionDef)]:
                for node in ast.walk(fn):
                    call = node.func if isinstance(node, ast.Call) else None
                    if isinstance(call, ast.Attribute) and call.attr in callers:
                        callers[call.attr].append(prefix + fn.name)
    assert callers == {"publish": ["window.Window._publish"], "poll": ["window.Window.step"]}
    assert not hasattr(engine, "run_rounds") and not hasattr(engine.rounds, "run_rounds")


def test_both_modes_run_the_same_steps() -> None:
    """The rounds mode is the window's options, not a second loop: the same `step` and `_publish`."""
    seen: dict[str, list[str]] = {}

    class Spy(Window):
        def step(self, items=None):  # type: ignore[no-untyped-def]
            seen.setdefault(self.key, []).append("step")
            return super().step(items)

        def _publish(self, batch):  # type: ignore[no-untyped-def]
            seen.setdefault(self.key, []).append("publish")
            super()._publish(batch)

    for key, rounds in (("streaming", None), ("rounds", Rounds())):
        m = FakeMarket(FakeClock(), script=lambda i, a: Act("untaken") if a == 0 and i % 2 else Act())
        done: list[object] = []
        w = Spy(
            m, FakeTracker(m), FakeLedger(m), Limits(10, 60, 4, 1), done.append, key=key, clock=m.clock, rounds=rounds
        )
        w.run(iter(enumerate(items(4))))
        assert len(done) == 4
    assert seen["streaming"].count("publish") >= 2 and seen["rounds"].count("publish") == 2
    assert seen["streaming"].count("step") > 2 and seen["rounds"].count("step") > 2
