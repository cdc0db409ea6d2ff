"""The batch engine: one loop of publishing, waiting, settling and re-publishing for every batch
flow, with no Prefect in it (the flows are its shells: parameters, blocks, artifacts, events).

- `book.EscrowBook`: the money. What the batch holds in escrow, task by task, against its budget;
  what settling gave back; what failed tasks still hold.
- `window.Window`: the loop. The streaming flows run it with at most `max_in_flight` tasks at
  once, refilled as tasks end, checkpointed by the results it hands out; `run_batch` runs it with
  every input in one window, in rounds (`rounds.Rounds`: the mode's options, escalation included,
  and its pure helpers).

It drives the chain through small ports (`book.Market`, `book.Tracker`, `book.LedgerPort`,
`book.Clock`) that the flows fill with the real client or their Prefect task runs, and that tests
fill with an honest fake (tests/unit/fake_market.py).
"""

from .book import Clock, EscrowBook, LedgerPort, Market, Tracker, WallClock
from .rounds import Rounds, batch_deadline, in_input_order
from .window import Entry, Limits, Window

__all__ = [
    "Clock",
    "Entry",
    "EscrowBook",
    "LedgerPort",
    "Limits",
    "Market",
    "Rounds",
    "Tracker",
    "WallClock",
    "Window",
    "batch_deadline",
    "in_input_order",
]
