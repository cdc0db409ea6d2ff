"""Imported by Prefect through the `prefect.collections` entry point: registers our blocks and the
`ogpu-provider` worker type, so the UI, `prefect block register`, `prefect work-pool create --type
ogpu-provider` and `prefect worker start` see them.

The UI learns worker types (their display name, logo, description and default job template: the
work pool forms' Type field) only from the server's `aggregate-worker-metadata` view, which Prefect
fills from its public collection registry; a type missing there shows blank. A Prefect server
loads this module on start (block auto-registration), so here the view gains the `ogpu-provider`
type when it is served by a server that has ogpu-prefect installed. Elsewhere nothing changes."""

from __future__ import annotations

import sys
from typing import Any

from . import blocks  # noqa: F401
from .worker import worker

VIEW = "aggregate-worker-metadata"


def worker_metadata() -> dict[str, Any]:
    """The `ogpu-provider` entry of the view, as the registry writes prefect-docker's."""
    cls = worker.OGPUProviderWorker
    return {
        cls.type: {
            "type": cls.type,
            "display_name": cls._display_name,
            "description": cls.get_description(),
            "documentation_url": cls.get_documentation_url(),
            "logo_url": cls.get_logo_url(),
            "install_command": "pip install ogpu-prefect",
            "is_beta": False,
            "default_base_job_configuration": cls.get_default_base_job_template(),
        }
    }


def _serve_worker_metadata() -> None:
    module = sys.modules.get("prefect.server.api.collections")
    view = getattr(module, "get_collection_view", None)
    if view is None or getattr(view, "ogpu_prefect", False):
        return  # not a server process (or already done)

    async def get_collection_view(name: str) -> dict[str, Any]:
        data = await view(name)
        if name == VIEW:
            data = {**data, "ogpu-prefect": worker_metadata()}
        return data

    get_collection_view.ogpu_prefect = True  # type: ignore[attr-defined]
    module.get_collection_view = get_collection_view  # type: ignore[union-attr]


_serve_worker_metadata()
