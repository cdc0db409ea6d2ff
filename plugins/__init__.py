"""ogpu-prefect's built-in plugins. Each module is registered under the `ogpu_prefect` entry-point
group in pyproject.toml, exactly as a third-party plugin package would be."""
