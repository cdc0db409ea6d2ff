"""ogpu-prefect: run work on the OpenGPU network from Prefect.

Prefect loads `ogpu_prefect.collection` (the `prefect.collections` entry point), which registers
the blocks and the worker. Importing this package itself stays light: the chain layer
(`ogpu_prefect.chain`) and the CLI do not import Prefect until they need it. The three blocks are
attributes of the package, imported on first access; `dir(ogpu_prefect)` lists them, so
`prefect block register -m ogpu_prefect` (which registers the Block classes among a module's
members) finds them.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "OGPUNetwork": "ogpu_prefect.blocks",
    "OGPUWallet": "ogpu_prefect.blocks",
    "OGPUStorage": "ogpu_prefect.blocks",
    "OGPUFunction": "ogpu_prefect.functions",
}


def __getattr__(name: str) -> Any:
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = ["OGPUFunction", "OGPUNetwork", "OGPUWallet", "OGPUStorage", "__version__"]
