"""The typed protocol events of watch.py against the real network's ABIs (no chain needed)."""

from __future__ import annotations

import dataclasses

from ogpu_prefect.chain.abi import spec
from ogpu_prefect.watch import _DEFINED, NEXUS_EVENTS, TERMINAL_EVENTS


def test_every_event_class_is_an_event_of_the_nexus_or_the_terminal() -> None:
    assert NEXUS_EVENTS.keys() | TERMINAL_EVENTS.keys() == _DEFINED.keys()
    assert not NEXUS_EVENTS.keys() & TERMINAL_EVENTS.keys()
    assert {"TaskPublished", "Attempted", "ResponseSubmitted", "TaskStatusChanged"} <= NEXUS_EVENTS.keys()
    assert {"AgentSet", "ProviderAnnounced", "MasterAnnounced"} <= TERMINAL_EVENTS.keys()


def test_each_event_class_has_a_field_per_abi_input() -> None:
    base = {"block_number", "tx_hash", "log_index", "emitter"}
    for contract, table in (("Nexus", NEXUS_EVENTS), ("Terminal", TERMINAL_EVENTS)):
        for name, cls in table.items():
            inputs = spec(contract).events[name].inputs
            own = {f.name for f in dataclasses.fields(cls)} - base
            assert len(own) == len(inputs), (contract, name, own, [p["name"] for p in inputs])


def test_a_watch_is_read_with_for_or_async_for_not_both() -> None:
    """A loop that stopped holds the rest of its polled batch: the other kind of loop would lose it."""
    import pytest

    from ogpu_prefect.watch import EventStream

    stream = EventStream(object(), 1.0, None)  # type: ignore[arg-type]  # nothing polls before the first event
    iter(stream)
    with pytest.raises(TypeError, match="not both"):
        stream.__aiter__()
