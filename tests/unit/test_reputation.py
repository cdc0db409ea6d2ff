"""Provider reputation without chain or server: the policy (a pure function of a record and the
time), records and their stored form, the book on an in-memory store (sharing, merging, a store
that fails), option parsing, and the waiting loop's part on synthetic tasks: refusals booked once,
banned providers hidden from the delivery method, a task whose every response was refused given
up, accepted winners booked."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest

from ogpu_prefect.chain.errors import InvalidInputError
from ogpu_prefect.chain.types import TaskStatus
from ogpu_prefect.delivery import (
    Decision,
    DecisionKind,
    DeliveryStrategy,
    FailReason,
    Rejection,
    ResponseView,
    TaskView,
)
from ogpu_prefect.models import PublishedTask
from ogpu_prefect.plugin_manager import PluginKind, installed
from ogpu_prefect.plugins.consensus import Consensus
from ogpu_prefect.plugins.manual import Manual
from ogpu_prefect.reputation import (
    MemoryStore,
    ProviderRecord,
    ReputationBook,
    ReputationPolicy,
    parse_reputation,
    record_name,
)
from ogpu_prefect.waiting import REJECT_QUIET_S, Tracked, Waiter

W, H = "0xwrong", "0xhonest"  # a provider that answers wrong, one that answers right


# ---- the policy: pure ----


def test_a_provider_is_banned_at_k_strikes_and_forgiven_after_forgive_s() -> None:
    p = ReputationPolicy(k=2, forgive_s=100)
    r = p.rejected(ProviderRecord(W), "validator", now=10)
    assert r.strikes == 1 and not p.banned(r, 10)
    r = p.rejected(r, "validator", now=20)
    assert p.banned(r, 20) and r.banned_until == 120 and r.bans == 1
    assert p.banned(r, 119.9) and not p.banned(r, 120)
    forgiven = p.forgiven(r, 120)
    assert forgiven.strikes == 0 and forgiven.banned_until is None
    assert forgiven.rejections == {"validator": 2}, "forgiven, not forgotten: the history stays"


def test_stale_strikes_are_forgotten_and_other_reasons_are_recorded_without_a_strike() -> None:
    p = ReputationPolicy(k=2, forgive_s=100, count=["validator"])
    r = p.rejected(ProviderRecord(W), "validator", now=0)
    r = p.rejected(r, "validator", now=150)  # the first strike is older than forgive_s
    assert r.strikes == 1 and not p.banned(r, 150)
    r = p.rejected(r, "disagreement", now=151)
    assert r.strikes == 1 and r.rejections == {"validator": 2, "disagreement": 1}


def test_a_banned_provider_earns_no_strikes_and_accepted_results_do_not_erase_them() -> None:
    p = ReputationPolicy(k=1, forgive_s=50)
    r = p.rejected(ProviderRecord(W), "unreadable", now=0)
    again = p.rejected(r, "unreadable", now=10)
    assert again.strikes == 1 and again.banned_until == 50, "a ban is not extended by what it hides"
    ok = p.accepted(ProviderRecord(H, strikes=1, last_rejection=0), now=5)
    assert ok.accepted == 1 and ok.strikes == 1 and ok.last_seen == 5


def test_policy_options_are_checked_with_their_names() -> None:
    for options, name in [({"k": 0}, "k"), ({"forgive_s": -1}, "forgive_s"), ({"count": ["typo"]}, "count")]:
        with pytest.raises(InvalidInputError) as info:
            parse_reputation("default", options)
        assert info.value.field == f"reputation_options.{name}"
    with pytest.raises(InvalidInputError, match="unknown reputation policy") as info:
        parse_reputation("nice", None)
    assert info.value.field == "reputation"
    with pytest.raises(InvalidInputError) as info:
        parse_reputation("default", {"ban_after": 2})
    assert info.value.field == "reputation_options.ban_after"
    assert parse_reputation(None) is None and parse_reputation("off") is None
    assert parse_reputation("strict", {"forgive_s": 60}).k == 1
    assert {"default", "strict"} <= set(installed(PluginKind.REPUTATION_POLICY)), "built-ins come through the hook"


# ---- records and the book ----


def test_a_record_round_trips_through_its_stored_form() -> None:
    r = ProviderRecord(W, {"validator": 2}, 3, 2, 1, 1_700_000_000.5, 1_700_000_001.0, 1_700_003_601.0)
    stored = r.to_json()
    assert stored["banned_until"].startswith("2023-11-14T") and stored["banned_until"].endswith("+00:00")
    assert ProviderRecord.from_json(W, stored) == r
    assert ProviderRecord.from_json(W, "edited by hand") == ProviderRecord(W), "junk is a fresh record"
    assert record_name(31337, "0xAbC") == "ogpu-rep-31337-0xabc"


def test_a_ban_is_shared_through_the_store_and_concurrent_books_merge() -> None:
    store, clock = MemoryStore(), [1000.0]
    policy = ReputationPolicy(k=2, forgive_s=60)
    a = ReputationBook(1, policy, store, clock=lambda: clock[0])
    b = ReputationBook(1, policy, store, clock=lambda: clock[0])
    a.reject(W, Rejection.VALIDATOR)
    b.reject(W, Rejection.DISAGREEMENT)  # b loaded the record before a wrote
    b.accept(H)
    a.flush()
    b.flush()
    merged = ReputationBook(1, policy, store).record(W)
    assert merged.rejections == {"validator": 1, "disagreement": 1} and merged.strikes == 2
    assert merged.banned_until == 1060, "two books' strikes add up to a ban"
    a.reject(H, "validator")
    assert not a.urgent
    a.reject(H, "validator")
    assert a.urgent and a.banned(H)
    a.flush()
    later = ReputationBook(1, policy, store, clock=lambda: 1059.0)
    assert later.banned(H) and later.record(H).accepted == 1
    assert not ReputationBook(1, policy, store, clock=lambda: 1061.0).banned(H)
    assert not ReputationBook(2, policy, store).banned(H), "records are per chain"
    pardon = ReputationBook(1, policy, store, clock=lambda: 1059.0)
    pardon.pardon(H)
    pardon.flush()
    assert not ReputationBook(1, policy, store, clock=lambda: 1059.0).banned(H)


def test_a_record_not_sealed_by_this_wallet_is_ignored_and_reported() -> None:
    """Anyone with API access can write a record (a ban of an honest provider until 2099): only
    one sealed with a secret derived from the client's own key counts."""
    import logging

    class Lines(logging.Handler):
        text = ""

        def emit(self, record: logging.LogRecord) -> None:
            self.text += record.getMessage() + "\n"

        def clear(self) -> None:
            self.text = ""

    caplog = Lines()  # Prefect's logging config keeps ogpu_prefect's records from pytest's caplog
    logging.getLogger("ogpu_prefect.reputation").addHandler(caplog)
    from ogpu_prefect.chain.devnet import DEV_KEYS
    from ogpu_prefect.chain.signing import Signer, derive_secret
    from ogpu_prefect.reputation_store import SEAL_LABEL, seal

    mine, other = (derive_secret(Signer(k), SEAL_LABEL) for k in DEV_KEYS[1:3])
    assert mine is not None and other is not None and mine != other
    assert DEV_KEYS[1][2:] not in mine.hex(), "derived one way, not the key"
    store, name = MemoryStore(), record_name(1, H)
    forged = ProviderRecord(H, {"validator": 9}, strikes=9, bans=1, banned_until=4070908800.0).to_json()
    for value in (forged, seal(name, forged, other), {**seal(name, forged, mine), "strikes": 10}):
        store.save(name, value)
        book = ReputationBook(1, ReputationPolicy(k=1), store, secret=mine)
        assert not book.banned(H) and book.record(H) == ProviderRecord(H)
        assert f"Variable {name} was not written by a client of this wallet" in caplog.text
        caplog.clear()
    book.reject(H, "validator")
    book.flush()  # the forged record is replaced by a sealed one
    caplog.clear()
    again = ReputationBook(1, ReputationPolicy(k=1), store, secret=mine)
    assert again.banned(H) and again.record(H).rejections == {"validator": 1} and not caplog.text
    logging.getLogger("ogpu_prefect.reputation").removeHandler(caplog)


def test_two_wallets_in_one_workspace_keep_their_own_records() -> None:
    """Each wallet seals its own record of a provider under its own name: before, both wallets
    wrote one Variable per provider, so the second wallet's flush replaced the first's ban with
    its own record (the first's seal no longer matched: its ban was forgotten)."""
    from ogpu_prefect.chain.devnet import DEV_KEYS
    from ogpu_prefect.chain.signing import Signer, derive_secret
    from ogpu_prefect.reputation_store import SEAL_LABEL, owner_tag, seal

    a_secret, b_secret = (derive_secret(Signer(k), SEAL_LABEL) for k in DEV_KEYS[1:3])
    assert a_secret is not None and b_secret is not None
    store, policy = MemoryStore(), ReputationPolicy(k=1)
    a = ReputationBook(1, policy, store, secret=a_secret)
    a.reject(H, "validator")
    a.flush()
    b = ReputationBook(1, policy, store, secret=b_secret)
    assert not b.banned(H), "another wallet's verdict is not this wallet's"
    b.accept(H)
    b.flush()
    assert ReputationBook(1, policy, store, secret=a_secret).banned(H), "the first wallet's ban survives"
    assert ReputationBook(1, policy, store, secret=b_secret).record(H).accepted == 1
    assert record_name(1, H, owner_tag(a_secret)) != record_name(1, H, owner_tag(b_secret))
    # a record an earlier version sealed under the shared name is still this wallet's
    legacy = ProviderRecord(H, {"validator": 3}, strikes=3).to_json()
    old_store = MemoryStore()
    old_store.save(record_name(1, H), seal(record_name(1, H), legacy, a_secret))
    assert ReputationBook(1, policy, old_store, secret=a_secret).record(H).rejections == {"validator": 3}
    assert ReputationBook(1, policy, old_store, secret=b_secret).record(H) == ProviderRecord(H)


def test_books_flushing_at_once_do_not_lose_each_others_updates() -> None:
    """Read-merge-write under the store's lock: without it, two books that read the record
    before either wrote overwrote each other (the last write won)."""
    import threading

    class Slow(MemoryStore):
        def load(self, name: str) -> Any:
            value = super().load(name)
            time.sleep(0.05)  # a round trip to the API: the other book reads meanwhile
            return value

    store = Slow()
    books = [ReputationBook(1, ReputationPolicy(), store) for _ in range(4)]
    for book in books:
        book.accept(H)
    threads = [threading.Thread(target=book.flush) for book in books]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert ReputationBook(1, ReputationPolicy(), store).record(H).accepted == 4


def test_a_failing_store_leaves_the_book_in_memory(caplog: pytest.LogCaptureFixture) -> None:
    class Down:
        calls = 0

        def load(self, name: str) -> Any:
            Down.calls += 1
            raise ConnectionError("no API")

        def save(self, name: str, value: dict[str, Any]) -> None:
            raise AssertionError("not after a failed load")

    book = ReputationBook(1, ReputationPolicy(k=1), Down())
    book.reject(W, "validator")
    book.reject(H, "validator")
    book.flush()
    assert book.banned(W) and book.banned(H) and Down.calls == 1
    assert caplog.text.count("cannot be read") == 1


# ---- the waiting loop's part, on synthetic tasks ----


class FakeClient:
    """What Waiter touches of a client when it only decides and confirms."""

    def __init__(self) -> None:
        self.chain = SimpleNamespace(cursor=lambda names, block: None, now=lambda: 0)
        self.fetch = lambda url: None
        self.confirmed: list[str] = []

    def confirm_responses(self, responses: list[str], check: bool = False) -> list[Any]:
        self.confirmed += responses
        return [SimpleNamespace(status=1)] * len(responses)


def response(i: int, provider: str, payload: Any, seen: float | None = None) -> ResponseView:
    return ResponseView(f"0xr{i}", provider, 10, f"u{i}", seen or time.time(), lambda url, p=payload: p)


def tracked(i: int, *responses: ResponseView, attempts: int | None = None) -> Tracked:
    t = Tracked(PublishedTask(index=i, address=f"0xt{i}", source="0xs", payment=10, expiry_time=2**40, config_url=""))
    t.status = TaskStatus.RESPONDED
    t.responses = {r.address: r for r in responses}
    t.attempt_count = len(responses) if attempts is None else attempts
    t.last_news = time.time() - 2 * REJECT_QUIET_S
    return t


def waiter(strategy: DeliveryStrategy, book: ReputationBook | None, *ts: Tracked, **kw: Any) -> Waiter:
    w = Waiter(FakeClient(), [], strategy, from_block=0, reputation=book, **kw)  # type: ignore[arg-type]
    w.tracked = {t.published.address: t for t in ts}
    return w


def valid(p: Any) -> bool:
    return p.get("result") != "wrong"


def test_a_refusal_is_booked_once_and_a_task_with_only_refused_responses_fails_rejected() -> None:
    book = ReputationBook(1, ReputationPolicy(k=5), MemoryStore())
    only_wrong = tracked(0, response(0, W, {"result": "wrong"}))
    wrong_then_pending = tracked(1, response(1, W, {"result": "wrong"}), attempts=2)
    w = waiter(Manual(validator=valid), book, only_wrong, wrong_then_pending)
    for _ in range(3):
        w._decide([only_wrong, wrong_then_pending], 0)
    assert book.record(W).rejections == {"validator": 2}, "each refused response counted once"
    assert only_wrong.outcome.kind is DecisionKind.FAIL and only_wrong.outcome.fail_reason is FailReason.REJECTED
    assert only_wrong.note == "every response was refused (validator: 1)"
    assert wrong_then_pending.outcome is None, "another attempter may still answer"
    wrong_then_pending.responses["0xr1"].rejected_at = time.time() - 31
    w._decide([wrong_then_pending], 0)
    assert wrong_then_pending.outcome.fail_reason is FailReason.REJECTED, "the grace has passed"


def test_a_task_whose_attempters_just_answered_waits_a_quiet_second() -> None:
    t = tracked(0, response(0, W, {"result": "wrong"}))
    t.last_news = time.time()
    w = waiter(Manual(validator=valid), None, t)
    w._decide([t], 0)
    assert t.outcome is None
    t.last_news -= REJECT_QUIET_S
    w._decide([t], 0)
    assert t.outcome.fail_reason is FailReason.REJECTED, "without a book too"


class Recording(DeliveryStrategy):
    name = "recording"
    requires = Manual.requires

    def __init__(self) -> None:
        self.views: list[TaskView] = []

    def decide(self, task: TaskView) -> Decision:
        self.views.append(task)
        return Decision.wait()


def test_banned_providers_are_hidden_from_the_delivery_method() -> None:
    book = ReputationBook(1, ReputationPolicy(k=1), MemoryStore())
    book.reject(W, "validator")
    t = tracked(0, response(0, W, {"result": "wrong"}), response(1, H, {"result": 1}))
    strategy = Recording()
    waiter(strategy, book, t)._decide([t], 0)
    assert [r.provider for r in strategy.views[0].responses] == [H] and strategy.views[0].hidden == 1
    alone = tracked(1, response(2, W, {"result": "wrong"}))
    waiter(Recording(), book, alone)._decide([alone], 0)
    assert alone.outcome.fail_reason is FailReason.REJECTED
    assert alone.note == "every response was refused (banned provider: 1)"


def test_a_ban_mid_pass_hides_the_provider_from_the_next_tasks_and_the_honest_one_is_confirmed() -> None:
    book = ReputationBook(1, ReputationPolicy(k=1), MemoryStore())
    ts = [tracked(i, response(2 * i, W, {"result": "wrong"}), attempts=2) for i in range(3)]
    w = waiter(Manual(validator=valid), book, *ts)
    w._decide(ts, 0)
    assert book.record(W).rejections == {"validator": 1} and book.banned(W)
    for i, t in enumerate(ts):
        t.responses[f"0xr{2 * i + 1}"] = response(2 * i + 1, H, {"result": i})
    w._decide(ts, 0)
    assert all(t.outcome.kind is DecisionKind.ACCEPT and t.outcome.response.provider == H for t in ts)
    assert book.record(H).accepted == 3 and w.client.confirmed == ["0xr1", "0xr3", "0xr5"]


def test_a_long_wait_writes_what_it_learned_while_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    """Records are written every BOOK_FLUSH_S while the wait goes on, not only at its end (where
    the first write of a process to Prefect Variables cost a 1,000-task batch 2.8 s)."""
    from ogpu_prefect import waiting

    store = MemoryStore()
    book = ReputationBook(1, ReputationPolicy(), store)
    t = tracked(0, response(0, H, {"result": 1}))
    w = waiter(Manual(), book, t)
    w.cursor, w._undecided = SimpleNamespace(poll=lambda: [], head=None), [t]
    monkeypatch.setattr(waiting, "BOOK_FLUSH_S", 0.0)
    w.poll()
    assert t.outcome is not None and t.outcome.kind is DecisionKind.ACCEPT
    assert store.load(record_name(1, H))["accepted"] == 1, "written before the wait's end"
    assert not book.changed


def test_an_unreadable_payload_is_refused_only_while_the_storage_answers_for_others() -> None:
    book = ReputationBook(1, ReputationPolicy(k=3), MemoryStore())
    bad = response(0, W, None)
    bad._failures, bad.fetch_error = ResponseView.MAX_FETCH_FAILURES, "refused"
    t = tracked(0, bad, attempts=2)
    w = waiter(Manual(), book, t)
    w._decide([t], 0)
    assert bad.rejection is None, "no payload read yet: maybe our storage is down"
    good = tracked(1, response(1, H, {"result": 1}))
    w._decide([good, t], 0)
    assert bad.rejection is Rejection.UNREADABLE and book.record(W).rejections == {"unreadable": 1}


def test_consensus_refuses_the_disagreeing_once_a_group_wins() -> None:
    book = ReputationBook(1, ReputationPolicy(), MemoryStore())
    rs = [response(0, W, {"result": 9}), response(1, H, {"result": 1}), response(2, "0xh2", {"result": 1})]
    t = tracked(0, *rs[:2])
    w = waiter(Consensus(k=2), book, t)
    w._decide([t], 0)
    assert t.outcome is None and book.record(W).rejections == {}, "no group has won yet"
    t.responses[rs[2].address] = rs[2]
    w._decide([t], 0)
    assert t.outcome.kind is DecisionKind.ACCEPT and book.record(W).rejections == {"disagreement": 1}


def test_a_final_tasks_winner_is_accepted_even_from_a_banned_provider() -> None:
    from ogpu_prefect.plugins.first_response import FirstResponse

    book = ReputationBook(1, ReputationPolicy(k=1), MemoryStore())
    book.reject(W, "validator")
    t = tracked(0, response(0, W, {"result": 1}))
    t.status, t.winner = TaskStatus.FINALIZED, W
    waiter(FirstResponse(), book, t)._decide([t], 0)
    assert t.outcome.kind is DecisionKind.ACCEPT, "FIRST_RESPONSE paid it: the result is ours"
    assert book.record(W).accepted == 1


def test_new_responses_are_read_as_they_arrive_except_a_banned_providers() -> None:
    book = ReputationBook(1, ReputationPolicy(k=1), MemoryStore())
    book.reject(W, "validator")
    read: list[str] = []
    providers = {"0xa": H, "0xb": W, "0xc": H}
    w = waiter(Recording(), book)
    w.client.fetch = lambda url: read.append(url) or {"url": url}
    w.chain.response = lambda r: SimpleNamespace(read=SimpleNamespace(get_response_params=lambda: r))
    w.chain.read_many = lambda calls: [SimpleNamespace(provider=providers[r], payment=1, data=f"u{r}") for r in calls]
    t = tracked(0, attempts=3)
    w._load_responses([(t, "0xa"), (t, "0xb"), (t, "0xc")])
    assert sorted(read) == ["u0xa", "u0xc"], "read before any decision; the banned provider's URL never"
    assert t.responses["0xa"].fetched and not t.responses["0xb"].fetched

    read.clear()
    decided, closed, won, won2 = (tracked(i, attempts=2) for i in range(1, 5))
    decided.outcome = Decision.fail("expired", FailReason.EXPIRED)
    closed.status = won.status = won2.status = TaskStatus.FINALIZED
    providers.update({"0xd": H, "0xe": H, "0xf": H, "0xg": H, "0xh": H})
    w._load_responses([(decided, "0xd"), (closed, "0xe"), (closed, "0xf"), (won, "0xg"), (won2, "0xh")])
    assert sorted(read) == ["u0xg", "u0xh"], "a closed task's only response (its winner) is read; others as before"


def test_a_record_deleted_while_a_book_runs_is_a_reset_not_resurrected() -> None:
    """A user deletes a provider's Variable (a reset) while a batch's book holds it: the book's
    next write is only what it learned since, on a fresh record. Before, it wrote back the whole
    history it had loaded."""
    store, policy = MemoryStore(), ReputationPolicy(k=100)
    old = ReputationBook(1, policy, store)
    for _ in range(5):
        old.accept(H)
    old.flush()
    book = ReputationBook(1, policy, store)
    assert book.record(H).accepted == 5
    store._data.clear()  # deleted in the UI
    book.accept(H)
    book.flush()
    assert ReputationBook(1, policy, store).record(H).accepted == 1
