"""When a wait may end tasks early on the providers' own failure reports (provider_failures.py),
and when a batch stops instead of re-publishing (engine.failures.same_failure). No chain, no server."""

from __future__ import annotations

from types import SimpleNamespace

from ogpu_prefect.engine.failures import same_failure
from ogpu_prefect.models import PublishedTask, TaskResult
from ogpu_prefect.plugins.first_response import FirstResponse
from ogpu_prefect.provider_failures import QUIET_S, ask, fail_together, failed_together, same_error
from ogpu_prefect.waiting import Tracked, Waiter

NOW = 1_000_000.0


def tracked(i: int, attempts: int = 1, errors: dict[str, str] | None = None, quiet: float = QUIET_S + 1) -> Tracked:
    t = Tracked(
        PublishedTask(index=i, address=f"0x{i:040x}", source="0x" + "1" * 40, payment=1, expiry_time=0, config_url="")
    )
    t.attempt_count, t.last_news = attempts, NOW - quiet
    t.provider_errors = dict(errors or {})
    return t


def err(task: int) -> str:
    return f"http://127.0.0.1:4000/run/f/0x{task:040x} answered HTTP 422: bad input {task}"


def test_the_same_error_of_different_tasks_is_one_kind() -> None:
    assert same_error(err(1)) == same_error(err(2))
    assert same_error(err(1)) != same_error("timed out after 30s")
    assert same_error("") == ""


def test_tasks_end_together_only_when_every_attempter_failed_them_the_same_way() -> None:
    both = [tracked(i, errors={"a": err(i)}) for i in range(3)]
    assert "the same way" in (failed_together(both, NOW) or "")
    assert failed_together([*both, tracked(9, errors={})], NOW) is None, "one without a report waits"
    assert failed_together([tracked(1, attempts=2, errors={"a": err(1)})], NOW) is None, "another attempter may answer"
    assert failed_together([tracked(1, errors={"a": err(1)}, quiet=0.5)], NOW) is None, "a quiet spell first"
    mixed = [tracked(1, errors={"a": err(1)}), tracked(2, errors={"a": "service crashed"})]
    assert failed_together(mixed, NOW) is None, "two kinds of failure: not one cause"
    answered = tracked(1, errors={"a": err(1)})
    answered.responses["0xr"] = object()  # type: ignore[assignment]
    assert failed_together([answered], NOW) is None
    assert failed_together([], NOW) is None


def test_ask_records_reports_for_tasks_attempted_and_unanswered_only() -> None:
    open_, fresh = tracked(1), tracked(2, attempts=0)
    asked: list[list[str]] = []

    def source(tasks: list[str]) -> dict[str, dict[str, str]]:
        asked.append(tasks)
        return {t.lower(): {"0xp": "boom"} for t in tasks}

    ask(source, [open_, fresh])
    assert asked == [[open_.published.address]] and open_.provider_errors == {"0xp": "boom"}
    ask(source, [open_])
    assert len(asked) == 1, "a task whose every attempter reported is not asked about again"


def test_a_batch_stops_only_when_nothing_succeeded_and_all_failed_one_visible_way() -> None:
    def failed(i: int, reason: str, error: str) -> TaskResult:
        return TaskResult(index=i, status="failed", reason=reason, error=error)

    same = [failed(i, "provider error", err(i)) for i in range(3)]
    assert same_failure(same) == err(0)
    assert same_failure([failed(i, "rejected", f"every response was refused (validator: {i})") for i in range(2)])
    assert same_failure([*same, TaskResult(index=9, status="finalized")]) is None
    assert same_failure([failed(1, "expired", "expired"), failed(2, "expired", "expired")]) is None, "not visible"
    assert same_failure([failed(1, "provider error", err(1)), failed(2, "provider error", "oom")]) is None
    assert same_failure([]) is None


class CountingSource:
    """A FailureSource that reports every asked task failed with `err`, and counts the asks."""

    def __init__(self) -> None:
        self.asked: list[list[str]] = []

    def __call__(self, tasks: list[str]) -> dict[str, dict[str, str]]:
        self.asked.append(tasks)
        return {t.lower(): {"0xp": err(int(t, 16))} for t in tasks}


def test_reports_are_read_only_when_they_can_end_the_open_tasks() -> None:
    source = CountingSource()
    assert fail_together(source, [tracked(1), tracked(2, attempts=0)], NOW) is None
    assert fail_together(source, [tracked(1), tracked(2, quiet=0.5)], NOW) is None
    answered = tracked(2)
    answered.responses["0xr"] = object()  # type: ignore[assignment]
    assert fail_together(source, [tracked(1), answered], NOW) is None
    assert source.asked == [], "while the chain says it cannot be, the Prefect API is not queried"
    both = [tracked(1), tracked(2)]
    assert "the same way" in (fail_together(source, both, NOW) or "")
    assert len(source.asked) == 1


def test_a_wait_that_accepted_a_result_stops_reading_failure_reports() -> None:
    """At 10,000 tasks the old wait queried the Prefect API's events for every attempted and
    unanswered task every 3 s, all batch long: 17% of the API server's samples."""

    def wait(*open_: Tracked, accepted: int) -> CountingSource:
        source = CountingSource()
        client = SimpleNamespace(chain=SimpleNamespace(cursor=lambda names, block: None), fetch=lambda url: None)
        w = Waiter(client, [], FirstResponse(), from_block=0, failures=source)  # type: ignore[arg-type]
        w.tracked = {t.published.address: t for t in open_}
        w.accepted, w._last_failures = accepted, 0.0
        w._provider_errors()
        return source

    assert wait(tracked(1), tracked(2), accepted=1).asked == [], "results came back: nothing refuses everything"
    assert wait(tracked(1), tracked(2, attempts=0), accepted=0).asked == [], "an open task nobody tried yet"
    source = wait(tracked(1), tracked(2), accepted=0)
    assert len(source.asked) == 1, "every open task failed and nothing was accepted: the reports are read"
