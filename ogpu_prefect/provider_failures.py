"""What providers report about the tasks they fail, as the client's wait can see it.

A provider worker emits `ogpu.provider.task.failed` (its error, related to the task) to its
Prefect API; a client on the same Prefect server reads them (`from_prefect_events`). The chain
says nothing of a failure: the task just waits for its expiry. So when every task still open has
been failed by every provider that attempted it, all with the same error, and nothing succeeded,
the wait ends those tasks at once (FailReason.PROVIDER_ERROR) and the batch stops instead of
re-publishing inputs the service refuses.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .models import Tracked

log = logging.getLogger(__name__)

FailureSource = Callable[[list[str]], dict[str, dict[str, str]]]
"""Task addresses -> {provider: the error it reported} for the tasks providers failed (as known)."""
FAILURES_EVERY_S = 3.0
"""How often a FailureSource is asked about the tasks attempted and unanswered."""
QUIET_S = 3.0
"""Seconds since a task's last attempt before its failures count as all there is (room for
another provider's attempt, sent at the same time, to be seen)."""
PAGE = 25
"""Tasks per events query (a page holds at most 50 events: what is missed just waits)."""


def same_error(text: str) -> str:
    """An error's kind: its first line without the addresses, hashes and numbers that differ per task."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    return re.sub(r"0x[0-9a-fA-F]+|\d+", "#", first)[:200]


def ask(source: FailureSource, open_tasks: Sequence[Tracked]) -> None:
    """Records in each open task attempted and unanswered what its providers reported."""
    asked = [t for t in open_tasks if t.attempt_count and not t.responses and len(t.provider_errors) < t.attempt_count]
    if not asked:
        return
    found = source([t.published.address for t in asked])
    for t in asked:
        t.provider_errors.update(found.get(t.published.address.lower(), {}))


def may_fail_together(open_tasks: Sequence[Tracked], now: float) -> bool:
    """What the chain alone says of the shortcut: every open task was attempted, none answered,
    none had news for QUIET_S. When not, no report can end them, so none is asked for: in a
    healthy batch the reports would be read over and over for nothing (at 10,000 tasks, queries
    on the Prefect API's whole event table every few seconds)."""
    return bool(open_tasks) and all(
        t.attempt_count and not t.responses and now - t.last_news >= QUIET_S for t in open_tasks
    )


def fail_together(source: FailureSource, open_tasks: Sequence[Tracked], now: float) -> str | None:
    """Asks `source` for what it has not yet reported, only where it can matter; returns the
    shared error when the open tasks all failed the same way (failed_together), else None."""
    if not may_fail_together(open_tasks, now):
        return None
    ask(source, open_tasks)
    return failed_together(open_tasks, now)


def failed_together(open_tasks: Sequence[Tracked], now: float) -> str | None:
    """The shared error when every open task was failed by every provider that attempted it, none
    answered, and all errors are of one kind; else None."""
    if not may_fail_together(open_tasks, now):
        return None
    if any(len(t.provider_errors) < t.attempt_count for t in open_tasks):
        return None
    errors = [e for t in open_tasks for e in t.provider_errors.values()]
    if len({same_error(e) for e in errors}) != 1:
        return None
    return f"every provider failed it the same way: {errors[0][:300]}"


def from_prefect_events(chain_id: int, since: float) -> FailureSource:
    """A FailureSource reading the `ogpu.provider.task.failed` events the current Prefect API
    stored since the wall-clock `since`. A failed read is logged once and reads as no reports
    (they are a shortcut: the expiry still ends the task)."""
    warned = False

    def read(tasks: list[str]) -> dict[str, dict[str, str]]:
        nonlocal warned
        try:
            return _read(tasks)
        except Exception as e:
            if not warned:
                warned = True
                log.warning("could not read the providers' failure reports (%s); tasks wait for their expiry", e)
            return {}

    def _read(tasks: list[str]) -> dict[str, dict[str, str]]:
        from .events import stored_events

        prefix = f"ogpu.{chain_id}.task."
        found: dict[str, dict[str, str]] = {}
        for start in range(0, len(tasks), PAGE):
            ids = [prefix + t.lower() for t in tasks[start : start + PAGE]]
            for e in stored_events(None, since, name="ogpu.provider.task.failed", related=(ids, "task")):
                _record(found, e, prefix)
        return found

    return read


def _record(found: dict[str, dict[str, str]], event: Any, prefix: str) -> None:
    task = next((r.id.removeprefix(prefix) for r in event.related if r.role == "task"), None)
    provider = event.resource.id.rsplit(".", 1)[-1]
    if task is not None:
        found.setdefault(task, {})[provider] = str(event.payload.get("error", "failed"))
