"""The cost of a batch before it runs, without spending anything (`run_batch(dry_run=True)`,
`ogpu-prefect task publish --dry-run`), and the check that somebody serves its source.

Everything here is read from the chain (the real network's views and `eth_estimateGas`); no
payload is written and no transaction signed. Prefect-free (the CLI uses it); `report_estimate`
imports Prefect's artifacts only when called from a flow.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field

from .amounts import format_ogpu
from .chain.errors import InvalidInputError
from .chain.structs import TaskParams
from .chain.types import Environment
from .inspect import RegisteredProvider, source_providers

PUBLISH_GAS = 207_701
"""Gas of `Controller.publishTask` with a 28-byte config URL (contracts/README.md's table): the
estimate when `eth_estimateGas` cannot run (the client's balance cannot pay one task yet)."""
GAS_PER_URL_BYTE = 200
"""A longer config URL costs this much more gas a byte (it lives in the task clone's code)."""
PLACEHOLDER_PREFIX = "https://cipfs.ogpuscan.io/ipfs"
"""Where config URLs point when the storage does not say (the real network's IPFS gateway)."""


class ServingProvider(BaseModel):
    address: str
    environment: list[str] = Field(description="the environment it registered with")
    eligible: bool = Field(description="the Vault's isEligible: it may attempt tasks")
    base_data: str = Field("", description="its hardware description's URL (Terminal.baseDataOf), '' if none")


class BatchEstimate(BaseModel):
    """What a batch will cost and who will serve it, read before anything is spent."""

    network: str
    source: str
    client: str
    tasks: int
    payment: int = Field(description="wei per task")
    escrow: int = Field(description="wei the batch holds in escrow: payment x tasks")
    budget: int | None = Field(None, description="the batch's escrow ceiling, wei (None: no ceiling)")
    fits_budget: bool
    gas_per_task: int
    gas_estimated_by: str = Field(description="eth_estimateGas, or the gas table when the node cannot estimate")
    fee_per_gas: int = Field(description="wei: the latest base fee plus the node's priority fee, or its gas price")
    gas_cost: int = Field(description="wei the publish transactions cost at that fee (paid from the wallet)")
    balance: int = Field(description="the client's liquid Vault balance, wei")
    covers_escrow: bool
    wallet: int = Field(description="the client's wallet balance (pays the gas), wei")
    covers_gas: bool
    source_environments: list[str]
    providers: list[ServingProvider]

    def markdown(self) -> str:
        """The estimate as a markdown table (the dry run's Prefect artifact)."""
        rows = [
            ("source", f"`{self.source}` on {self.network}"),
            ("tasks", str(self.tasks)),
            ("payment per task", format_ogpu(self.payment)),
            ("escrow needed", format_ogpu(self.escrow)),
            ("budget", "none" if self.budget is None else f"{format_ogpu(self.budget)} ({_yes(self.fits_budget)})"),
            ("client Vault balance", f"{format_ogpu(self.balance)} (covers the escrow: {_yes(self.covers_escrow)})"),
            (
                "gas",
                f"{self.tasks} x {self.gas_per_task:,} ({self.gas_estimated_by}) at {self.fee_per_gas:,} wei/gas = "
                f"{format_ogpu(self.gas_cost)} (wallet covers it: {_yes(self.covers_gas)})",
            ),
            ("source environments", ", ".join(self.source_environments) or "none"),
            ("registered providers", str(len(self.providers))),
        ]
        out = ["| item | value |", "| --- | --- |", *(f"| {k} | {v} |" for k, v in rows)]
        if self.providers:
            out += ["", "| provider | environment | eligible | hardware (base data) |", "| --- | --- | --- | --- |"]
            out += [
                f"| `{p.address}` | {', '.join(p.environment)} | {_yes(p.eligible)} | {p.base_data or '-'} |"
                for p in self.providers
            ]
        else:
            out += ["", "**Nobody is registered to this source: its tasks would expire untaken.**"]
        return "\n".join(out)


def _yes(flag: bool) -> str:
    return "yes" if flag else "**no**"


def _envs(flags: Environment) -> list[str]:
    return [e.name.lower() for e in Environment if e in flags]


def estimate_batch(
    client: Any,
    source: str,
    tasks: int,
    payment: int,
    expiry_time: int,
    *,
    budget: int | None = None,
    providers: list[RegisteredProvider] | None = None,
) -> BatchEstimate:
    """The cost of publishing `tasks` tasks at `payment` on `source` (an OGPUClient, whose address
    and store say who pays and how long the config URLs are). Reads only."""
    chain = client.chain
    me = client.address
    src = chain.source(source).read
    v = chain.vault.read
    params, balance = chain.read_many([src.get_source_params(), v.balance_of(me)])
    wallet = chain.balance(me)
    providers = source_providers(chain, source) if providers is None else providers
    gas, how = _publish_gas(chain, me, source, _config_url(client.store), expiry_time, payment)
    fee = fee_per_gas(chain)
    escrow = payment * tasks
    return BatchEstimate(
        network=chain.network.name,
        source=source,
        client=me,
        tasks=tasks,
        payment=payment,
        escrow=escrow,
        budget=budget,
        fits_budget=budget is None or escrow <= budget,
        gas_per_task=gas,
        gas_estimated_by=how,
        fee_per_gas=fee,
        gas_cost=gas * fee * tasks,
        balance=balance,
        covers_escrow=balance >= escrow,
        wallet=wallet,
        covers_gas=wallet >= gas * fee * tasks,
        source_environments=_envs(Environment(params.imageEnvironments)),
        providers=[
            ServingProvider(
                address=p.address, environment=_envs(p.environment), eligible=p.eligible, base_data=p.base_data
            )
            for p in providers
        ],
    )


def _config_url(store: Any) -> str:
    """A config URL as long as the ones `store` hands out (`<read url>/<sha256>.json`)."""
    prefix = next(
        (u for u in (getattr(store, a, None) for a in ("read_url", "base_url", "write_url")) if isinstance(u, str)),
        PLACEHOLDER_PREFIX,
    )
    return f"{prefix.rstrip('/')}/{'0' * 64}.json"


def _publish_gas(chain: Any, client: str, source: str, url: str, expiry: int, payment: int) -> tuple[int, str]:
    call = chain.controller.publish_task(TaskParams(source, url, expiry, payment))
    tx = {"from": client, "to": call.to, "data": "0x" + call.data.hex()}
    try:
        return int(chain.rpc.call("eth_estimateGas", [tx]), 16), "eth_estimateGas"
    except Exception:  # it would revert now (no balance for one task): the measured figure
        return PUBLISH_GAS + GAS_PER_URL_BYTE * max(len(url) - 28, 0), "gas table"


def fee_per_gas(chain: Any) -> int:
    """What one gas costs now: the latest block's base fee plus the node's priority fee
    (EIP-1559), or `eth_gasPrice` on a chain without a base fee."""
    block, tip, price = chain.rpc.batch(
        [("eth_getBlockByNumber", ["latest", False]), ("eth_maxPriorityFeePerGas", []), ("eth_gasPrice", [])]
    )
    base = block.get("baseFeePerGas") if isinstance(block, dict) else None
    if base:
        return int(base, 16) + (int(tip, 16) if isinstance(tip, str) else 0)
    return int(price, 16) if isinstance(price, str) else 0


def check_served(
    chain: Any, source: str, *, require: bool = False, warn: Callable[[str], Any] | None = None
) -> list[RegisteredProvider]:
    """The providers registered to `source`. None: a warning through `warn` (a logger's
    `warning`; default this module's logger), as its tasks would expire untaken; or, with
    `require`, InvalidInputError naming `require_providers`, before anything is spent."""
    providers = source_providers(chain, source)
    if not providers:
        message = (
            f"no provider is registered to source {source} on {chain.network.name}: its tasks would expire untaken"
        )
        if require:
            raise InvalidInputError("require_providers", message + "; nothing was published")
        (warn or logging.getLogger(__name__).warning)(message + " (publishing anyway)")
    return providers


def report_estimate(estimate: BatchEstimate) -> None:
    """The estimate as a markdown artifact (`ogpu-batch-dry-run`) of the running flow."""
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(
        markdown="# Dry run: nothing was published\n\n" + estimate.markdown(),
        key="ogpu-batch-dry-run",
        description=f"cost of {estimate.tasks} task(s) on {estimate.source}",
    )
