"""When a batch stops instead of re-publishing: every input failed one visible way."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..provider_failures import same_error


def same_failure(results: Sequence[Any]) -> str | None:
    """The error every one of `results` (TaskResults) failed with, when none succeeded and all
    failed one visible way (a provider error of one kind, or every response refused); else None."""
    if not results or any(r.status == "finalized" for r in results):
        return None
    reasons = {r.reason for r in results}
    if len(reasons) != 1 or reasons.pop() not in ("provider error", "rejected"):
        return None
    kinds = {same_error(r.error or "") for r in results}
    return str(results[0].error) if len(kinds) == 1 else None
