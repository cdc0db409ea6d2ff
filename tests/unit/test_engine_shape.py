"""The batch engine has no Prefect in it: no engine module imports prefect, and running a batch of
each kind (rounds, window) on the fake chain loads no Prefect module (so a front-end other than a
flow can drive it, and its tests need no Prefect server)."""

from __future__ import annotations

import ast
import subprocess
import sys

from .imports import PACKAGE

ENGINE = PACKAGE / "engine"

RUN_BOTH = """
import sys
from tests.unit.fake_market import Act, FakeClock, FakeLedger, FakeMarket, FakeTracker, items, rounds_ports
from ogpu_prefect.engine import Limits, Window, run_rounds

m = FakeMarket(FakeClock(), script=lambda i, a: Act("untaken") if a == 0 and i % 2 else Act())
publish, wait = rounds_ports(m, "k", items(4))
out = run_rounds(4, 10, task_timeout=60, max_republish=1, budget=40, deadline=m.clock.t + 300,
                 publish=publish, wait=wait, ledger=FakeLedger(m), clock=m.clock)
assert {r.status for r in out.results} == {"finalized"}
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
