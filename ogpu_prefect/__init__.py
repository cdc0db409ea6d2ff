"""ogpu-prefect: run work on the OpenGPU network from Prefect.

Prefect loads `ogpu_prefect.collection` (the `prefect.collections` entry point), which registers
the blocks and the worker. Importing this package itself stays light: the chain layer
(`ogpu_prefect.chain`) and the CLI do not import Prefect until they need it.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "OGPUNetwork": "ogpu_prefect.blocks",
    "OGPUWallet": "ogpu_prefect.blocks",
    "OGPUStorage": "ogpu_prefect.blocks",
}


def __getattr__(name: str) -> Any:
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)


__all__ = ["OGPUNetwork", "OGPUWallet", "OGPUStorage", "__version__"]
