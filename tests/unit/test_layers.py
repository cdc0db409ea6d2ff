"""The package's layers, read from the source (tests/unit/imports.py: every import, lazy ones inside
functions and those under `if TYPE_CHECKING:` included): a module imports only its own layer and the
layers below it, and nothing imports in a circle. docs/design.md ("Layers") draws the same order.

No anvil, no Prefect server: the source files only."""

from __future__ import annotations

import ast
import fnmatch

from .imports import cycles, import_graph, package_modules

LAYERS: list[tuple[str, list[str]]] = [
    # bottom first; a pattern matches the dotted name under `ogpu_prefect.` ("" is the package itself)
    ("base: stdlib helpers, the hook specifications", ["_loopback", "hookspecs"]),
    ("chain: the protocol (no Prefect)", ["chain", "chain.*"]),  # but chain.devnet: operations
    (
        "values and plugin interfaces (no Prefect)",
        [
            "plugin_manager",
            "delivery",
            "compose",
            "backends",
            "worker.policy",
            "validation",
            "models",
            "amounts",
            "fetching",
            "storage",
            "escalation",
        ],
    ),
    (
        "Prefect plumbing the client relies on",
        [
            "settings",
            "prefect_api",
            "api_writer",
            "prefect_compat",
            "events",
            "lease",
            "reputation_store",
            "reputation",
            "provider_failures",
            "result_cache",
        ],
    ),
    (
        "client: publishing, waiting, escrow, reads",
        [
            "reconcile",
            "publishing",
            "waiting",
            "client",
            "escrow",
            "inspect",
            "batch_estimate",
            "watch",
            "agents",
            "standing",
            "batch",
            "batch_report",
            "stream_io",
            "engine",
            "engine.*",
        ],
    ),
    ("blocks: saved configuration", ["blocks"]),
    ("provider: the worker and its parts", ["worker", "worker.*"]),
    (
        "Prefect tasks and the flows' parts",
        [
            "tasks",
            "read_tasks",
            "vault",
            "agent_tasks",
            "flowkit",
            "streaming",
            "task_ports",
            "call_loop",
            "call_engine",
            "functions",
        ],
    ),
    ("built-in plugins", ["plugins", "plugins.*"]),
    ("flows and the Prefect collection", ["flows", "flows.*", "collection"]),
    (
        "operations: devnet, CLI, stack, demo, walk-through",
        ["chain.devnet", "", "cli", "cli.*", "demo", "stack", "lifecycle"],
    ),
]
PREFECT_FREE = 3  # the first three layers import no Prefect, not even lazily


def layer_of(module: str) -> int:
    """The layer that names the module exactly, else the lowest whose pattern matches it."""
    name = module.removeprefix("ogpu_prefect").removeprefix(".")
    for i, (_, patterns) in enumerate(LAYERS):
        if name in patterns:
            return i
    for i, (_, patterns) in enumerate(LAYERS):
        if any(fnmatch.fnmatchcase(name, p) for p in patterns):
            return i
    raise AssertionError(f"{module} is in no layer: add it to LAYERS (and docs/design.md)")


def test_every_module_has_a_layer() -> None:
    """A module is in the layer that names it (`chain.devnet`, `worker.policy`), else the lowest
    whose pattern matches it (`chain.*`, `worker.*`)."""
    for module in package_modules():
        layer_of(module)


def test_no_import_climbs_to_a_higher_layer() -> None:
    upward = [
        f"{m} ({LAYERS[layer_of(m)][0]}) -> {t} ({LAYERS[layer_of(t)][0]})"
        for m, targets in import_graph().items()
        for t in sorted(targets)
        if layer_of(t) > layer_of(m)
    ]
    assert upward == []


def test_no_import_cycle_type_checking_imports_included() -> None:
    assert cycles(import_graph()) == []


def test_the_lowest_layers_import_no_prefect() -> None:
    found = []
    for module, path in package_modules().items():
        if layer_of(module) >= PREFECT_FREE:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            found += [f"{module}: {n}" for n in names if n == "prefect" or n.startswith("prefect.")]
    assert found == []


def test_the_checks_see_what_they_must() -> None:
    """The graph has the edges the rules are about: a lazy import inside a function, one under
    TYPE_CHECKING, and the flows/ and plugins/ folders under their package names."""
    graph = import_graph()
    assert "ogpu_prefect.flows.run_batch" in graph and "ogpu_prefect.plugins.first_response" in graph
    assert "ogpu_prefect.flows.stream_batch" in graph["ogpu_prefect.flows.scheduled_batch"]
    assert "ogpu_prefect.reputation" in graph["ogpu_prefect.waiting"]  # under TYPE_CHECKING
    assert "ogpu_prefect.chain.network" in graph["ogpu_prefect.blocks"]  # also inside a method
    assert "ogpu_prefect.lifecycle" in graph["ogpu_prefect.cli"]  # inside a function
