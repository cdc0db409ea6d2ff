"""The plugin manager: loads every plugin registered under the `ogpu_prefect` entry-point group
(built-ins included), checks them against the hookspecs, and looks plugins up by name."""

from __future__ import annotations

import threading
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


def _collect(results: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for provided in results:
        for name, cls in provided.items():
            if name in merged and merged[name] is not cls:
                raise PluginError(f"two plugins provide the {kind} {name!r}")
            merged[name] = cls
    return merged


def delivery_methods() -> dict[str, type[Any]]:
    """Every installed delivery method, by name."""
    return _collect(plugin_manager().hook.ogpu_prefect_delivery_methods(), "delivery method")


def _instance(kind: str, table: dict[str, type[Any]], name: str, options: dict[str, Any]) -> Any:
    if name not in table:
        raise PluginError(f"unknown {kind} {name!r}; installed: {', '.join(sorted(table))}")
    return table[name](**options)


def get_delivery_method(name: str, **options: Any) -> Any:
    """An instance of the delivery method `name`, configured with `options`."""
    return _instance("delivery method", delivery_methods(), name, options)


def hardware_backends() -> dict[str, type[Any]]:
    """Every installed hardware backend, by name."""
    return _collect(plugin_manager().hook.ogpu_prefect_hardware_backends(), "hardware backend")


def get_hardware_backend(name: str, **options: Any) -> Any:
    """An instance of the hardware backend `name`, configured with `options`."""
    return _instance("hardware backend", hardware_backends(), name, options)


def task_policies() -> dict[str, type[Any]]:
    """Every installed task policy, by name."""
    return _collect(plugin_manager().hook.ogpu_prefect_task_policies(), "task policy")


def get_task_policy(name: str, **options: Any) -> Any:
    """An instance of the task policy `name`, configured with `options`."""
    return _instance("task policy", task_policies(), name, options)


def reputation_policies() -> dict[str, type[Any]]:
    """Every installed provider-reputation policy, by name."""
    return _collect(plugin_manager().hook.ogpu_prefect_reputation_policies(), "reputation policy")


def get_reputation_policy(name: str, **options: Any) -> Any:
    """An instance of the reputation policy `name`, configured with `options`."""
    return _instance("reputation policy", reputation_policies(), name, options)
