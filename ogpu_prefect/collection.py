"""Imported by Prefect through the `prefect.collections` entry point: registers our blocks and the
`ogpu-provider` worker type, so the UI, `prefect block register`, `prefect work-pool create --type
ogpu-provider` and `prefect worker start` see them."""

from . import blocks  # noqa: F401
from .worker import worker  # noqa: F401
