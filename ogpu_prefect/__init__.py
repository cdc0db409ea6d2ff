"""ogpu-prefect: run work on the OpenGPU network from Prefect."""

__version__ = "0.1.0"
