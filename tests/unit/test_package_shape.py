"""The package's shape: modules of a readable size, dependencies that tell the truth (everything
imported is declared, everything declared is imported or says why not), no symlink, and the
editable install's flows/ and plugins/. Its layers and import cycles: test_layers.py."""

from __future__ import annotations

import ast
import re
import sys
import tomllib

from .imports import PACKAGE, package_files

ROOT = PACKAGE.parent
GENERATED = {"ogpu_prefect/chain/contracts.py"}
MAX_LINES = 450
"""~400 lines is the guide, never a reason to split one concept across files (a TxSender is one): the
test flags a module clearly past it."""
# Declared for what they do, not imported by our code: Prefect's server breaks with newer fastapi;
# the production stack's Prefect server loads prefect_redis and asyncpg by its settings.
NOT_IMPORTED = {"fastapi", "prefect_redis", "asyncpg"}
IMPORT_NAMES = {
    "pyyaml": "yaml",
    "eth-abi": "eth_abi",
    "eth-utils": "eth_utils",
    "eth-hash": "eth_hash",
    "ogpu": "ogpu",
    "vadersentiment": "vaderSentiment",
}


def test_no_module_far_over_400_lines() -> None:
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in package_files()}
    big = {p: n for p, n in sizes.items() if n > MAX_LINES and p not in GENERATED}
    assert big == {}


def _requirement_name(req: str) -> str:
    return re.split(r"[\[<>=!~ ;]", req, maxsplit=1)[0].lower()


def _third_party_imports() -> set[str]:
    """What the installed package imports: its modules and the sample sources it ships."""
    found = set()
    for path in [*package_files(), *(ROOT / "flows" / "sources").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names and m != "ogpu_prefect"}


def test_dependencies_tell_the_truth() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = {_requirement_name(r) for r in project["dependencies"]}
    extras = {_requirement_name(r) for reqs in project["optional-dependencies"].values() for r in reqs}
    declared = {IMPORT_NAMES.get(n, n.replace("-", "_")) for n in runtime | extras} - {"ogpu_prefect"}
    imported = _third_party_imports()
    assert imported - declared == set(), "imported, not declared"
    assert declared - imported - NOT_IMPORTED == set(), "declared, never imported"


def test_the_repository_has_no_symlink() -> None:
    """flows/ and plugins/ are packaged by the build (pyproject's `sources`), not linked into the
    package: a link breaks on a Windows checkout and in tools that do not follow links."""
    import subprocess

    listed = subprocess.run(["git", "ls-files", "-s"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    links = [line.split("\t", 1)[1] for line in listed.splitlines() if line.startswith("120000 ")]
    assert links == []


def test_the_editable_install_imports_flows_and_plugins_from_their_folders() -> None:
    """As the wheel does (tests/test_wheel.py): `ogpu_prefect.flows` is the repository's flows/."""
    import ogpu_prefect.flows.run_batch as run_batch
    import ogpu_prefect.plugins.first_response as first_response

    assert run_batch.__file__ == str(ROOT / "flows" / "run_batch.py")
    assert first_response.__file__ == str(ROOT / "plugins" / "first_response.py")
