"""A provider leaving sources and describing its machine, without Prefect (the CLI and the
`ogpu-provider` worker share it).

Leaving: `Nexus.unregister(source, provider)` (the real network's ABI) takes the provider off a
source; it moves no stake. The stake comes back through the Vault: `unbond(amount)` (lockup ->
unbonding, the `UNBONDING_PERIOD` cooldown starts) and, once it matures, `claim()` (unbonding ->
liquid balance). PROTOCOL.md 5.2.

Hardware: the Terminal stores two URL strings per provider, `baseDataOf` (what the machine is) and
`liveDataOf` (how it is doing now); the format behind the URL is unspecified (PROTOCOL.md), so we
store a JSON document in the provider's payload store and set its URL (`setBaseData` /
`setLiveData`, the provider's own key: an agent cannot). Stores are content-addressed, so an
unchanged description has the URL already on chain and costs no transaction.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from collections.abc import Sequence
from typing import Any

from .chain.connection import Chain
from .chain.tx import Receipt, TxSender

HARDWARE_SCHEMA = "ogpu-prefect/hardware/1"
"""The `schema` of our base data documents (live data: `ogpu-prefect/live/1`)."""


def registered(chain: Chain, provider: str, sources: Sequence[str]) -> list[bool]:
    """Whether `provider` is registered to each of `sources` (Source.registrantId != 0)."""
    ids = chain.read_many([chain.source(s).read.registrant_id(provider) for s in sources])
    return [bool(i) for i in ids]


def leave_sources(chain: Chain, sender: TxSender, provider: str, sources: Sequence[str]) -> dict[str, Receipt]:
    """Unregisters `provider` from those of `sources` it is registered to (pipelined; idempotent:
    one it is not registered to sends nothing). Signed by the provider, its master or the master's
    agent. Returns the receipts by source."""
    todo = [s for s, on in zip(sources, registered(chain, provider, sources)) if on]
    if not todo:
        return {}
    receipts = sender.wait(sender.send([chain.nexus.unregister(s, provider) for s in todo]))
    return dict(zip(todo, receipts))


def machine_hardware() -> dict[str, Any]:
    """This machine's hardware, as the base data document: CPU model and cores, memory, GPUs
    (nvidia-smi where it is installed), OS and architecture."""
    gpus: list[dict[str, Any]] = []
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout
            for line in out.splitlines():
                name, _, mem = line.rpartition(",")
                if name.strip():
                    gpus.append({"vendor": "nvidia", "name": name.strip(), "memory_mib": int(mem.strip())})
        except (OSError, subprocess.SubprocessError, ValueError):
            pass  # a broken driver: reported as no GPU rather than failing the worker's start
    return {
        "schema": HARDWARE_SCHEMA,
        "cpu": {"model": _cpu_model(), "cores": os.cpu_count() or 0, "arch": platform.machine()},
        "memory_bytes": _memory_bytes(),
        "gpus": gpus,
        "os": platform.system().lower(),
    }


def machine_load() -> dict[str, Any]:
    """How this machine is doing now (the live data's machine part): load average and free memory."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {"load_1m": round(load[0], 2), "memory_available_bytes": _memory_bytes("MemAvailable")}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_bytes(field: str = "MemTotal") -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if field == "MemTotal" and hasattr(os, "sysconf"):
        try:
            return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
        except (ValueError, OSError):
            pass
    return 0


def publish_data(chain: Chain, sender: TxSender, store: Any, kind: str, document: dict[str, Any]) -> str | None:
    """Stores `document` and sets its URL as the signer's `kind` data ("base" or "live") on the
    Terminal. Returns the transaction hash, or None when that URL is already set (no transaction)."""
    url = store.put_json(document, field=f"{kind}_data")
    terminal = chain.terminal
    current = (terminal.base_data_of if kind == "base" else terminal.live_data_of)(sender.address)
    if current == url:
        return None
    call = terminal.set_base_data(url) if kind == "base" else terminal.set_live_data(url)
    return sender.transact(call).tx_hash
