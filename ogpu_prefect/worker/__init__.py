"""The provider side: running sources' services (hardware backends, the ogpu.service protocol).
The `ogpu-provider` Prefect worker is built on these."""
