"""The batch engine: one loop of publishing, waiting, settling and re-publishing for every batch
flow, with no Prefect in it (the flows are its shells: parameters, blocks, artifacts, events).

- `book.EscrowBook`: the money. What the batch holds in escrow, task by task, against its budget;
  what settling gave back; what failed tasks still hold.
- `rounds.run_rounds`: `run_batch`, every input in one window, in rounds.
- `window.Window`: the streaming flows, at most `max_in_flight` tasks at once, refilled as
  tasks end; checkpointed by the results it hands out.

Both drive the chain through small ports (`book.Market`, `book.Tracker`, `book.Clock`) that the
flows fill with the real client and that tests fill with an honest fake (tests/unit/fake_market.py).
"""

from .book import Clock, EscrowBook, LedgerPort, Market, Tracker, WallClock
from .rounds import RoundsOutcome, run_rounds
from .window import Entry, Limits, Window

__all__ = [
    "Clock",
    "Entry",
    "EscrowBook",
    "LedgerPort",
    "Limits",
    "Market",
    "RoundsOutcome",
    "Tracker",
    "WallClock",
    "Window",
    "run_rounds",
]
