"""Hatchling build hook: an editable install imports `ogpu_prefect.flows` and `ogpu_prefect.plugins`
from the repository's flows/ and plugins/ folders, as the wheel does (pyproject's `sources`).

Hatchling's editable modes cannot do that on their own: the default (a .pth to the repository root)
sees only `flows` and `plugins` as top-level names; `dev-mode-exact` maps top-level names only (the
`editables` redirector refuses a dotted one); `force-include` copies files, which go stale and are
shadowed by the repository's own `ogpu_prefect` package; and a `sources` rewrite that adds a prefix
is refused ("Dev mode installations are unsupported when any path rewrite in the `sources` option
changes a prefix"). So the editable wheel gets one small meta-path finder, generated here from the
same `sources` table, and a .pth that installs it. The standard wheel is untouched.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

MODULE = "_ogpu_prefect_subpackages"

FINDER = '''"""Written by ogpu-prefect's hatch_build.py into an editable install: maps subpackages of the
package to the repository folders they are built from (the wheel has them at these names)."""

import importlib.abc
import importlib.util
import os
import sys

SUBPACKAGES = {subpackages!r}


class SubpackageFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        folder = SUBPACKAGES.get(fullname)
        if folder is None:
            return None
        init = os.path.join(folder, "__init__.py")
        return importlib.util.spec_from_file_location(fullname, init, submodule_search_locations=[folder])


if not any(type(f).__name__ == "SubpackageFinder" for f in sys.meta_path):
    sys.meta_path.append(SubpackageFinder())
'''


def subpackages(root: str, sources: dict[str, str]) -> dict[str, str]:
    """`sources` rewrites that put a folder under a package (`flows` -> `ogpu_prefect/flows/`) as
    {dotted name: absolute folder}."""
    found = {}
    for source, target in sources.items():
        dotted = target.strip("/\\").replace("/", ".").replace("\\", ".")
        if source and dotted and "." in dotted:
            found[dotted] = str(Path(root, source).resolve())
    return found


class EditableSubpackagesHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if version != "editable":
            return
        mapping = subpackages(self.root, self.build_config.sources)
        self._scratch = tempfile.mkdtemp(prefix="ogpu-prefect-editable-")
        module = Path(self._scratch, f"{MODULE}.py")
        module.write_text(FINDER.format(subpackages=mapping))
        pth = Path(self._scratch, f"{MODULE}.pth")
        pth.write_text(f"import {MODULE}\n")
        build_data["force_include_editable"][str(module)] = module.name
        build_data["force_include_editable"][str(pth)] = pth.name

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        scratch = getattr(self, "_scratch", None)
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
