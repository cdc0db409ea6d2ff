"""The package's own import graph, read from the source (ast): every import statement, those inside
functions (lazy imports) and under `if TYPE_CHECKING:` included, for the no-cycles and layering
tests. The repository's flows/ and plugins/ folders count under the names the build gives them
(pyproject's `[tool.hatch.build.targets.wheel] sources`: `ogpu_prefect.flows`, `ogpu_prefect.plugins`)."""

from __future__ import annotations

import ast
import os
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "ogpu_prefect"
NOT_CODE = ("sources", "data", "__pycache__", "artifacts")  # sample sources are services, not package code


def packaged_folders() -> dict[Path, str]:
    """{repository folder: the dotted package it is built as}: the package and pyproject's `sources`."""
    wheel = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]["wheel"]
    folders = {PACKAGE: "ogpu_prefect"}
    for source, target in wheel.get("sources", {}).items():
        folders[ROOT / source] = target.strip("/").replace("/", ".")
    return folders


def package_modules() -> dict[str, Path]:
    """{dotted module name: its file} for every module the wheel ships."""
    modules: dict[str, Path] = {}
    for folder, dotted in packaged_folders().items():
        for root, dirs, names in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if d not in NOT_CODE)
            for n in names:
                if not n.endswith(".py"):
                    continue
                parts = [dotted, *Path(root).relative_to(folder).parts, n[:-3]]
                if parts[-1] == "__init__":
                    parts.pop()
                modules[".".join(p for p in parts if p and p != ".")] = Path(root) / n
    return dict(sorted(modules.items()))


def package_files() -> list[Path]:
    return sorted(package_modules().values())


def import_graph() -> dict[str, set[str]]:
    """{module: the package modules it imports}, an `import a.b` counted as `a.b` (or the nearest
    package module above it)."""
    modules = package_modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    parts = parts[: len(parts) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                # `from pkg import name`: the submodule `pkg.name` when there is one, else `pkg`
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for t in targets:
                while t and t not in modules:
                    t = t.rpartition(".")[0]
                if t and t != name:
                    graph[name].add(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every elementary cycle found by a DFS from each node (enough to report one per loop)."""
    found: list[list[str]] = []
    seen: set[frozenset[str]] = set()
    for start in graph:
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    key = frozenset(path)
                    if key not in seen:
                        seen.add(key)
                        found.append([*path, start])
                elif nxt not in path and len(path) < 8:
                    stack.append((nxt, [*path, nxt]))
    return found
