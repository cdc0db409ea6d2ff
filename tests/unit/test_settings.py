"""One settings class for every variable (settings.OGPUSettings): the served flows' parameters read
PREFECT_INTEGRATIONS_OGPU_<FIELD>, and the bare `OGPU_*` names docs/flows.md documented still work."""

from __future__ import annotations

import pytest

from ogpu_prefect.flowkit import served_parameters
from ogpu_prefect.settings import get_settings

OLD = ("OGPU_PAYMENT", "OGPU_PAYMENT_WEI", "OGPU_NETWORK_BLOCK", "OGPU_WALLET_BLOCK", "OGPU_STORAGE_BLOCK")


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in OLD + ("OGPU_SOURCE", "OGPU_BATCH_INBOX", "OGPU_BATCH_CRON"):
        monkeypatch.delenv(name, raising=False)
    for field in ("SERVED_PAYMENT", "SERVED_PAYMENT_WEI", "SERVED_NETWORK_BLOCK", "BATCH_SOURCE", "BATCH_CRON"):
        monkeypatch.delenv(f"PREFECT_INTEGRATIONS_OGPU_{field}", raising=False)


def test_defaults_are_the_demo_blocks_and_a_hundredth_ogpu() -> None:
    assert served_parameters() == {
        "payment": "0.01 OGPU",
        "network": "demo-chain",
        "wallet": "demo-client",
        "storage": "demo-payloads",
    }
    s = get_settings()
    assert (s.batch_source, s.batch_inbox, s.batch_cron) == (None, "file://./inbox", "0 2 * * *")


def test_the_prefixed_names_and_the_old_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OGPU_NETWORK_BLOCK", "old-net")
    monkeypatch.setenv("OGPU_PAYMENT_WEI", "5")
    monkeypatch.setenv("OGPU_SOURCE", "0xabc")
    assert served_parameters()["network"] == "old-net"
    assert served_parameters()["payment"] == "5 wei"  # the wei form where no payment is set
    assert get_settings().batch_source == "0xabc"
    monkeypatch.setenv("PREFECT_INTEGRATIONS_OGPU_SERVED_NETWORK_BLOCK", "new-net")
    monkeypatch.setenv("PREFECT_INTEGRATIONS_OGPU_SERVED_PAYMENT", "2 OGPU")
    monkeypatch.setenv("PREFECT_INTEGRATIONS_OGPU_BATCH_CRON", "0 3 * * *")
    assert served_parameters()["network"] == "new-net"  # the prefixed name wins
    assert served_parameters()["payment"] == "2 OGPU"
    assert get_settings().batch_cron == "0 3 * * *"


def test_no_bare_environment_read_outside_the_settings() -> None:
    """The package and the flows read the environment's OGPU_* names only through OGPUSettings."""
    import re

    from .imports import package_files

    found = [
        str(p)
        for p in package_files()
        if re.search(r"environ(\.get)?[\[(]\s*[\"']OGPU_", p.read_text()) and p.name != "settings.py"
    ]
    assert found == []
