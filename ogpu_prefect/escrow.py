"""Settling the escrow of tasks a batch leaves behind (a failure, a cancellation, a deadline).

On the real network the one documented refund is `Controller.cancelTask` of a NEW task; what
happens to the escrow of an expired task is the network's business (PROTOCOL.md). So: cancel
every task still NEW; reclaim expired ones where the deployment has our devnet's
`Controller.reclaimExpired` (detected, `Chain.has_extensions`); and report every other task whose
escrow is still held as waiting for the network's expiry handling, with its expiry. Nothing is
left out of the report: `EscrowReport.unaccounted` is what no list names, and is always empty.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .chain.errors import OGPUError
from .chain.types import TaskStatus

if TYPE_CHECKING:
    from .client import OGPUClient

log = logging.getLogger(__name__)


@dataclass
class EscrowReport:
    """Where the escrow of each task stands (task addresses)."""

    finalized: list[str] = field(default_factory=list)
    """Paid out to a provider (the rest returned), as the protocol intends."""
    cancelled: list[str] = field(default_factory=list)
    """Cancelled (now or before): the escrow is back in the client's Vault balance."""
    reclaimed: list[str] = field(default_factory=list)
    """Expired and reclaimed (now or before): the escrow is back."""
    waiting: dict[str, int] = field(default_factory=dict)
    """task -> expiry time: attempted by a provider (not cancellable) and not finalized; its escrow
    waits for a response, or for the network's expiry handling after that time."""
    unreadable: list[str] = field(default_factory=list)
    """Could not be read or settled now (the node failed): settle again later."""

    @property
    def open_escrow(self) -> list[str]:
        return [*self.waiting, *self.unreadable]

    def merge(self, other: EscrowReport) -> None:
        self.finalized += other.finalized
        self.cancelled += other.cancelled
        self.reclaimed += other.reclaimed
        self.waiting.update(other.waiting)
        self.unreadable += other.unreadable

    def summary(self) -> str:
        parts = [
            f"{len(self.finalized)} finalized",
            f"{len(self.cancelled)} cancelled (refunded)",
            f"{len(self.reclaimed)} reclaimed (refunded)",
        ]
        if self.waiting:
            parts.append(
                f"{len(self.waiting)} attempted and unfinished: escrow held until their expiry "
                f"(latest {max(self.waiting.values())})"
            )
        if self.unreadable:
            parts.append(f"{len(self.unreadable)} could not be read now")
        return ", ".join(parts)


def settle(client: OGPUClient, tasks: Sequence[str]) -> EscrowReport:
    """Cancels the NEW ones among `tasks`, reclaims the expired unfinished ones where the
    deployment can, and reports where every one stands (`client`: the tasks' client)."""
    report = EscrowReport()
    tasks = list(dict.fromkeys(tasks))
    if not tasks:
        return report
    chain = client.chain
    try:
        statuses, expiries, now = _read(client, tasks)
    except OGPUError as e:
        log.warning("could not read %d task(s) to settle their escrow: %s", len(tasks), e)
        report.unreadable += tasks
        return report
    new = [t for t, s in zip(tasks, statuses) if s is TaskStatus.NEW]
    reclaimable = [
        t
        for t, s, expiry in zip(tasks, statuses, expiries)
        if s in (TaskStatus.ATTEMPTED, TaskStatus.RESPONDED) and expiry <= now
    ]
    if reclaimable and not chain.has_extensions():
        reclaimable = []  # the real network: their escrow waits for its expiry handling
    try:
        for group, send, done in (
            (new, client.cancel_tasks, report.cancelled),
            (reclaimable, client.reclaim_expired, report.reclaimed),
        ):
            for t, receipt in zip(group, send(group, check=False) if group else []):
                (done if receipt.status == 1 else report.unreadable).append(t)
    except OGPUError as e:  # the node went away mid-way: what is not settled is read again below
        log.warning("settling escrow failed (%s); reading the tasks again", e)
        settled = {*report.cancelled, *report.reclaimed, *report.unreadable}
        report.unreadable += [t for t in (*new, *reclaimable) if t not in settled]
    acted = {*new, *reclaimable}
    _classify(report, [(t, s, e) for t, s, e in zip(tasks, statuses, expiries) if t not in acted])
    if report.unreadable:  # a race (attempted while we cancelled, finalized while we reclaimed)
        again, report.unreadable = report.unreadable, []
        try:
            statuses, expiries, _ = _read(client, again)
            _classify(report, list(zip(again, statuses, expiries)))
        except OGPUError:
            report.unreadable += again
    return report


def _classify(report: EscrowReport, tasks: list[tuple[str, TaskStatus, int]]) -> None:
    """Files tasks by their status: final ones by how they ended, open ones as waiting."""
    for t, s, expiry in tasks:
        if s is TaskStatus.FINALIZED:
            report.finalized.append(t)
        elif s is TaskStatus.CANCELED:
            report.cancelled.append(t)
        elif s is TaskStatus.EXPIRED:
            report.reclaimed.append(t)
        else:
            report.waiting[t] = expiry


def _read(client: OGPUClient, tasks: Sequence[str]) -> tuple[list[TaskStatus], list[int], int]:
    chain = client.chain
    reads = chain.read_many(
        [r for t in tasks for r in (chain.task(t).read.get_status(), chain.task(t).read.get_expiry_time())]
    )
    return [TaskStatus(s) for s in reads[0::2]], list(reads[1::2]), chain.now()
