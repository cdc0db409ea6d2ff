"""anvil's stuck queue (chain/pool.py `requeue_stuck`): the race that leaves an account's next
transaction queued behind a nonce it already has cannot be triggered on demand, so the node's
answers are played by a fake RPC here (the recovery itself runs against anvil in every batch)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from ogpu_prefect.chain.pool import requeue_stuck

ME = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
OTHER = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"


class FakeRpc:
    def __init__(self, status: dict[str, str], inspect: dict[str, Any]) -> None:
        self.status, self.inspect = status, inspect
        self.calls: list[str] = []

    def batch(self, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        return ["0x44" if m == "eth_getTransactionCount" else self.status for m, _ in calls]

    def call(self, method: str, params: list[Any] | None = None) -> Any:
        self.calls.append(method)
        return self.inspect if method == "txpool_inspect" else True


def missing(nonce: int = 0x44) -> list[Any]:
    return [SimpleNamespace(nonce=nonce)]


def test_a_queue_stuck_while_another_account_has_pending_transactions_is_sent_again() -> None:
    rpc = FakeRpc(
        {"pending": "0x20", "queued": "0x3"},
        {"pending": {OTHER: {"1": "..."}}, "queued": {ME.lower(): {"69": "...", "70": "..."}}},
    )
    assert requeue_stuck(rpc, ME, missing())  # type: ignore[arg-type]
    assert rpc.calls == ["txpool_inspect", "anvil_removePoolTransactions"]


def test_an_account_with_pending_transactions_is_not_stuck() -> None:
    rpc = FakeRpc(
        {"pending": "0x20", "queued": "0x3"},
        {"pending": {ME: {"68": "..."}}, "queued": {ME: {"70": "..."}}},
    )
    assert not requeue_stuck(rpc, ME, missing())  # type: ignore[arg-type]
    assert "anvil_removePoolTransactions" not in rpc.calls


def test_an_idle_pool_with_a_queue_is_stuck_without_reading_its_entries() -> None:
    rpc = FakeRpc({"pending": "0x0", "queued": "0x2"}, {})
    assert requeue_stuck(rpc, ME, missing())  # type: ignore[arg-type]
    assert rpc.calls == ["anvil_removePoolTransactions"]
