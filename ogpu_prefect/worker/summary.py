"""A provider worker's summary artifact (`ogpu-provider-<address>`): what it served since it
started, what it earned (read from the Vault, so it is what was paid, not what was asked), and how
its other tasks ended. Updated every SUMMARY_EVERY_S while something changed, and when it stops."""

from __future__ import annotations

import time
from typing import Any

import anyio

from .execution import TaskRuns
from .provider import Provider

SUMMARY_EVERY_S = 30.0
ETHER = 10**18


class ProviderSummary:
    def __init__(self, provider: Provider, runs: TaskRuns, pool: str) -> None:
        self.provider, self.runs, self.pool = provider, runs, pool
        self.started = time.time()
        self.earned_at_start = provider.chain.vault.total_earnings_of(provider.address)
        self._written: dict[str, int] | None = None

    def markdown(self) -> str:
        earned = self.provider.chain.vault.total_earnings_of(self.provider.address) - self.earned_at_start
        rows = "\n".join(f"| {kind} | {count} |" for kind, count in self.runs.outcomes.items())
        return (
            f"### OpenGPU provider `{self.provider.address}` (pool `{self.pool}`)\n\n"
            f"Since {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(self.started))}: "
            f"earned **{earned / ETHER:.6f} OGPU** ({earned} wei).\n\n"
            f"| tasks | count |\n|---|---|\n{rows}\n"
        )

    async def write(self, client: Any, *, force: bool = False) -> None:
        """Writes the artifact when the counts changed since the last write (or `force`)."""
        from prefect.client.schemas.actions import ArtifactCreate

        if not force and self._written == self.runs.outcomes:
            return
        counts = dict(self.runs.outcomes)
        body = await anyio.to_thread.run_sync(self.markdown)
        await client.create_artifact(
            ArtifactCreate(
                key=f"ogpu-provider-{self.provider.address.lower()[2:]}",
                type="markdown",
                data=body,
                description="What this provider served and earned",
            )
        )
        self._written = counts

    async def loop(self, client: Any, stop: anyio.Event) -> None:
        while not stop.is_set():
            with anyio.move_on_after(SUMMARY_EVERY_S):
                await stop.wait()
            try:
                await self.write(client)
            except Exception:  # a summary is cosmetic; the next round tries again
                pass
