"""ogpu-prefect's settings, on Prefect's settings machinery (as the integrations do): each field is
read from `PREFECT_INTEGRATIONS_OGPU_<FIELD>` in the environment, a `.env` file, `prefect.toml`
(`[integrations.ogpu]`) or `pyproject.toml` (`[tool.prefect.integrations.ogpu]`)."""

from __future__ import annotations

from pathlib import Path

from prefect.settings.base import PrefectBaseSettings, build_settings_config
from pydantic import Field


class OGPUSettings(PrefectBaseSettings):
    model_config = build_settings_config(("integrations", "ogpu"))

    home: Path = Field(
        default=Path(".ogpu"),
        description="Where the devnet profile, the demo's servers and logs, and the wallet locks live.",
    )
    anvil: str | None = Field(
        default=None,
        description="Path of the anvil binary (default: the one the set-up installed, then anvil on PATH).",
    )
    provider_wallet_block: str | None = Field(
        default=None,
        description="A provider worker's wallet block, instead of its pool's `wallet_block`: one pool, "
        "one key per machine.",
    )
    provider_address: str | None = Field(
        default=None,
        description="The provider a worker of an agent pool acts for (one of the pool's `providers`): "
        "one pool, one provider per machine.",
    )
    rpc_outage_s: float = Field(
        default=60.0,
        gt=0,
        description="Seconds an RPC endpoint may be unreachable before a call gives up (transport errors "
        "are retried with backoff meanwhile; a batch waiting for results pauses until its deadline).",
    )

    input_roots: list[str] = Field(
        default=["."],
        description="Where a flow's run parameters may read inputs from (stream_batch `inputs`, "
        "scheduled_batch `inbox` and `outbox`): folders and URL prefixes (file:///data/in, "
        "s3://bucket/in/, https://data.example.com/in/). A parameter elsewhere is refused. Default: "
        "the working directory. A loopback or private address only where a prefix names it.",
    )

    batch_lease_wait_s: float = Field(
        default=90.0,
        ge=0,
        description="Seconds a batch run waits for another live run of the same batch_key to end "
        "before failing with BatchKeyConflictError.",
    )


def get_settings() -> OGPUSettings:
    """The settings as the environment has them now (read on every call: tests and the demo set
    variables for child processes)."""
    return OGPUSettings()
