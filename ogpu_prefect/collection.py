"""Imported by Prefect through the `prefect.collections` entry point: registers our blocks (and the
worker type, once it exists) so the UI, `prefect block register` and `prefect worker` see them."""

from . import blocks  # noqa: F401
