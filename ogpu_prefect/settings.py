"""ogpu-prefect's settings, on Prefect's settings machinery (as the integrations do): each field is
read from `PREFECT_INTEGRATIONS_OGPU_<FIELD>` in the environment, a `.env` file, `prefect.toml`
(`[integrations.ogpu]`) or `pyproject.toml` (`[tool.prefect.integrations.ogpu]`)."""

from __future__ import annotations

from pathlib import Path

from prefect.settings.base import PrefectBaseSettings, build_settings_config
from pydantic import AliasChoices, Field


def _names(field: str, old: str) -> AliasChoices:
    """A field's names: PREFECT_INTEGRATIONS_OGPU_<FIELD> (and the field's own, for settings
    files), then its older bare environment variable."""
    return AliasChoices(f"PREFECT_INTEGRATIONS_OGPU_{field.upper()}", field, old)


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

    # What a served flow's deployment (`python flows/<flow>.py`) takes as its parameters. Each also
    # reads its older bare name (docs/flows.md documented `OGPU_PAYMENT`, `OGPU_*_BLOCK`, ...).
    served_payment: str = Field(
        default="0.01 OGPU",
        validation_alias=_names("served_payment", "OGPU_PAYMENT"),
        description="A served batch flow's `payment`: an amount with its unit.",
    )
    served_payment_wei: int | None = Field(
        default=None,
        ge=0,
        validation_alias=_names("served_payment_wei", "OGPU_PAYMENT_WEI"),
        description="A served batch flow's `payment` in wei, where `served_payment` is not set.",
    )
    served_network_block: str = Field(
        default="demo-chain",
        validation_alias=_names("served_network_block", "OGPU_NETWORK_BLOCK"),
        description="A served batch flow's `network` block (default: the one `./dev demo` saves).",
    )
    served_wallet_block: str = Field(
        default="demo-client",
        validation_alias=_names("served_wallet_block", "OGPU_WALLET_BLOCK"),
        description="A served batch flow's `wallet` block.",
    )
    served_storage_block: str = Field(
        default="demo-payloads",
        validation_alias=_names("served_storage_block", "OGPU_STORAGE_BLOCK"),
        description="A served batch flow's `storage` block.",
    )
    batch_source: str | None = Field(
        default=None,
        validation_alias=_names("batch_source", "OGPU_SOURCE"),
        description="The source `python flows/scheduled_batch.py` serves its nightly deployment for.",
    )
    batch_inbox: str = Field(
        default="file://./inbox",
        validation_alias=_names("batch_inbox", "OGPU_BATCH_INBOX"),
        description="The inbox `python flows/scheduled_batch.py` serves its nightly deployment with.",
    )
    batch_cron: str = Field(
        default="0 2 * * *",
        validation_alias=_names("batch_cron", "OGPU_BATCH_CRON"),
        description="The schedule of the nightly deployment `python flows/scheduled_batch.py` serves.",
    )


def get_settings() -> OGPUSettings:
    """The settings as the environment has them now (read on every call: tests and the demo set
    variables for child processes)."""
    return OGPUSettings()
