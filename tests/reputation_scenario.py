"""The provider-reputation scenario, shared by tests/test_reputation.py and bench/reputation.py: a
MANUAL source served by two stand-in providers (tests/provider_sim.py, real transactions), one
that answers wrong and first, one honest and slower that leaves the first `skip` tasks it sees to
the other (busy elsewhere). `run_batch` with `manual` delivery and a validator must ban the wrong
one and complete every input through the honest one, re-publishing the inputs only the wrong one
answered. Provider records live in the Prefect API's Variables (`ogpu-rep-<chain>-<address>`)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ogpu_prefect.chain.types import DeliveryMethod
from ogpu_prefect.reputation import PREFIX, ProviderRecord, ReputationBook, record_name

from .scenarios import PAYMENT, Ctx, run_flow

WRONG, HONEST = "provider2", "provider1"


def is_right(payload: Any) -> bool:
    """The client's validator: the stand-in's wrong answer is recognisable."""
    return isinstance(payload, dict) and payload.get("result") != "wrong"


def clear_records() -> None:
    """Deletes every provider record of the current Prefect API: tests share one server, and the
    devnet's providers have the same addresses in every test."""
    from prefect.client.orchestration import get_client

    # Filtered by name on the server: a page of every Variable (200 at most) may hold none of
    # them once a suite's batches have left their own Variables (this missed them, in CI).
    query = {"variables": {"name": {"like_": f"{PREFIX}-"}}, "limit": 200}
    with get_client(sync_client=True) as c:
        while found := [v["name"] for v in c.request("POST", "/variables/filter", json=query).json()]:  # type: ignore[arg-type]
            for name in found:
                c.delete_variable_by_name(name)


def _client_secret(ctx: Ctx) -> bytes:
    from ogpu_prefect.chain.signing import Signer, derive_secret
    from ogpu_prefect.reputation_store import SEAL_LABEL

    secret = derive_secret(Signer(ctx.devnet.key(ctx.client_role)), SEAL_LABEL)
    assert secret is not None
    return secret


def record(ctx: Ctx, role: str) -> ProviderRecord:
    """A provider's record as the client wallet's next batch will load it."""
    book = ReputationBook.prefect(ctx.chain.network.chain_id, secret=_client_secret(ctx))
    return book.record(ctx.devnet.address(role))


def stored(ctx: Ctx, role: str) -> Any:
    """The client wallet's record of `role` as the Prefect Variable holds it."""
    from prefect.variables import Variable

    from ogpu_prefect.reputation_store import owner_tag

    owner = owner_tag(_client_secret(ctx))
    return Variable.get(record_name(ctx.chain.network.chain_id, ctx.devnet.address(role), owner))


@dataclass
class Figures:
    inputs: int
    wall_s: float
    finalized: int = 0
    by_honest: int = 0
    tasks: int = 0
    republished_inputs: int = 0
    rejections: dict[str, int] = field(default_factory=dict)
    bans: int = 0
    open_escrow: int = 0

    def line(self) -> str:
        rejected = ", ".join(f"{k} {v}" for k, v in sorted(self.rejections.items())) or "none"
        return (
            f"inputs={self.inputs} finalized={self.finalized} by_honest={self.by_honest} tasks={self.tasks} "
            f"republished_inputs={self.republished_inputs} rejections=({rejected}) bans={self.bans} "
            f"open_escrow={self.open_escrow} wall_s={self.wall_s:.1f}"
        )


class Market:
    """A MANUAL source with the wrong and the honest stand-in serving it."""

    def __init__(self, ctx: Ctx, source: str, sims: list[Any], state: dict[str, Any]) -> None:
        self.ctx, self.source, self.sims, self.state = ctx, source, sims, state

    def batch(
        self,
        n: int,
        *,
        options: dict[str, Any] | None,
        reputation: str = "default",
        max_republish: int = 2,
        **kwargs: Any,
    ) -> tuple[Any, Figures]:
        """One run_batch of `n` inputs; (results, figures: the wrong provider's refusals and bans
        are counted from its record, before and after)."""
        before = record(self.ctx, WRONG)
        t0 = time.monotonic()
        results = run_flow(
            self.ctx,
            self.source,
            n,
            delivery="manual",
            delivery_options={"policy": "first", "validator": is_right},
            reputation=reputation,
            reputation_options=options,
            max_republish=max_republish,
            task_timeout=kwargs.pop("task_timeout", 120),
            **kwargs,
        ).result()
        after = record(self.ctx, WRONG)
        honest = self.ctx.devnet.address(HONEST)
        figures = Figures(
            n,
            time.monotonic() - t0,
            finalized=sum(r.status == "finalized" for r in results),
            by_honest=sum(r.provider == honest for r in results),
            tasks=sum(len(r.tasks) for r in results),
            republished_inputs=sum(r.republished > 0 for r in results),
            rejections={
                k: v - before.rejections.get(k, 0)
                for k, v in after.rejections.items()
                if v > before.rejections.get(k, 0)
            },
            bans=after.bans - before.bans,
            open_escrow=sum(len(r.open_escrow) for r in results),
        )
        return results, figures


@contextmanager
def market(ctx: Ctx, *, skip: int, honest_delay: float = 1.0) -> Iterator[Market]:
    """The wrong provider answers every task at once; the honest one attempts at once but answers
    after `honest_delay` seconds, and leaves the first `skip` tasks it sees alone.
    `market.state["wrong"] = False` makes the wrong one honest from then on, `market.state["away"] =
    True` makes it take no more tasks."""
    source = ctx.source(DeliveryMethod.MANUAL_CONFIRMATION)
    state: dict[str, Any] = {"wrong": True, "away": False, "seen": 0}

    def answer(config: dict[str, Any]) -> dict[str, Any]:
        return {"result": "wrong" if state["wrong"] else config.get("data")}

    def take(task: str) -> bool:
        state["seen"] += 1
        return state["seen"] > skip

    options = {
        WRONG: {"answer": answer, "take": lambda task: not state["away"]},
        HONEST: {"delay": honest_delay, "take": take},
    }
    with ctx.providers(source, (WRONG, HONEST), **options) as sims:
        yield Market(ctx, source, sims, state)


__all__ = ["PAYMENT", "Figures", "Market", "clear_records", "is_right", "market", "record", "stored"]
