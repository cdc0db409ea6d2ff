"""The batch engine's escrow book (engine/book.py): what a batch holds in escrow against its budget,
task by task, in both modes of the window. No chain at all."""

from __future__ import annotations

from ogpu_prefect.engine import EscrowBook
from ogpu_prefect.escrow import EscrowReport

PAY = 10**16


def test_the_book_counts_each_task_once_at_its_own_payment_and_releases_it_once() -> None:
    book = EscrowBook(budget=10)
    book.published(["a", "b"], 3)
    book.published(["b", "c"], 4)  # b reused: counted once
    assert (book.held, book.held_peak, book.room(2)) == (10, 10, 0)
    book.release(["a", "a"])
    assert (book.held, book.room(3), book.room(4)) == (7, 1, 0)


def test_the_book_holds_back_what_settling_could_not_return_until_a_later_settling_does() -> None:
    book = EscrowBook()
    book.published(["new", "attempted", "down"], 5)
    released = book.account(EscrowReport(cancelled=["new"], waiting={"attempted": 70}, unreadable=["down"]))
    assert released == ["new"] and book.held == 10
    assert book.held_back == {"attempted": 70, "down": 0} and book.unreadable == {"down"}
    assert book.due(69) == ["down"] and sorted(book.due(70)) == ["attempted", "down"]
    book.account(EscrowReport(reclaimed=["attempted"], cancelled=["down"]))
    assert (book.held, book.held_back, book.unreadable) == (0, {}, set())
    assert book.room(5) is None, "no budget: no ceiling"


def test_the_room_is_exact_at_the_budget_and_one_wei_under_takes_one_fewer() -> None:
    book = EscrowBook(budget=3 * PAY)
    assert book.room(PAY) == 3
    assert EscrowBook(budget=3 * PAY - 1).room(PAY) == 2
    book.published(["a"], PAY + 1)
    assert book.room(PAY) == 1


def test_the_report_says_what_is_held_now_after_every_settlings_counts() -> None:
    book = EscrowBook()
    book.published(["a", "b", "c"], 5)
    book.account(EscrowReport(cancelled=["a"], waiting={"b": 70}, unreadable=["c"]))
    book.account(EscrowReport(reclaimed=["b"]))
    report = book.report()
    assert (report.cancelled, report.reclaimed, report.waiting, report.unreadable) == (["a"], ["b"], {}, ["c"])
    assert book.escrow.waiting == {"b": 70}, "the merged reports still hold what the first one said"
