"""The plugin manager: loads every plugin registered under the `ogpu_prefect` entry-point group
(built-ins included), checks them against the hookspecs, and looks plugins up by name."""

from __future__ import annotations

import threading
from enum import Enum
from typing import Any

import pluggy

from . import hookspecs

_lock = threading.Lock()
_manager: pluggy.PluginManager | None = None


class PluginError(Exception):
    """A plugin is unknown, ambiguous, or breaks the hook contract."""


def plugin_manager(*, reload: bool = False) -> pluggy.PluginManager:
    """The process' plugin manager, created on first use (`reload` re-reads the entry points)."""
    global _manager
    with _lock:
        if _manager is None or reload:
            pm = pluggy.PluginManager(hookspecs.PROJECT)
            pm.add_hookspecs(hookspecs)
            pm.load_setuptools_entrypoints(hookspecs.PROJECT)
            pm.check_pending()  # an @hookimpl with no matching hookspec is an error, not silence
            _manager = pm
        return _manager


class PluginKind(Enum):
    """What a plugin provides; each kind is one hook of hookspecs.py (the member's value)."""

    DELIVERY_METHOD = "ogpu_prefect_delivery_methods"
    HARDWARE_BACKEND = "ogpu_prefect_hardware_backends"
    TASK_POLICY = "ogpu_prefect_task_policies"
    REPUTATION_POLICY = "ogpu_prefect_reputation_policies"
    ESCALATION_POLICY = "ogpu_prefect_escalation_policies"

    def __str__(self) -> str:
        return self.name.lower().replace("_", " ")


def installed(kind: PluginKind) -> dict[str, type[Any]]:
    """Every installed plugin of `kind` (e.g. `PluginKind.DELIVERY_METHOD`), by name. Two plugins
    giving one name to different classes is a PluginError."""
    merged: dict[str, type[Any]] = {}
    for provided in getattr(plugin_manager().hook, kind.value)():
        for name, cls in provided.items():
            if name in merged and merged[name] is not cls:
                raise PluginError(f"two plugins provide the {kind} {name!r}")
            merged[name] = cls
    return merged


def create(kind: PluginKind, name: str, **options: Any) -> Any:
    """An instance of the installed plugin of `kind` called `name`, configured with `options`
    (`create(PluginKind.DELIVERY_METHOD, "manual", policy="cheapest")`)."""
    table = installed(kind)
    if name not in table:
        raise PluginError(f"unknown {kind} {name!r}; installed: {', '.join(sorted(table))}")
    return table[name](**options)
