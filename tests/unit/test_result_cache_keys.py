"""The result cache's keys (result_cache.py): one per network, source, function and input."""

from __future__ import annotations

from ogpu_prefect.models import TaskInput
from ogpu_prefect.result_cache import CallKeys

SOURCE = "0x75537828f2ce51be7289709686A69CbFDbB714F1"


def test_a_key_names_the_network_the_source_the_function_and_the_input() -> None:
    keys = CallKeys("net-a", SOURCE)
    item = TaskInput(function_name="echo", data={"a": 1, "b": [1, 2]})
    assert keys.key(item) == CallKeys("net-a", SOURCE.lower()).key(
        TaskInput(function_name="echo", data={"b": [1, 2], "a": 1})
    ), "an address's case and a dict's key order are not the input"
    others = {
        CallKeys("net-b", SOURCE).key(item),  # another chain (or a fresh devnet: its genesis differs)
        CallKeys("net-a", "0x" + "1" * 40).key(item),
        keys.key(TaskInput(function_name="other", data=item.data)),
        keys.key(TaskInput(function_name="echo", data={"a": 2, "b": [1, 2]})),
    }
    assert keys.key(item) not in others and len(others) == 4
    assert keys.key(item).startswith("ogpu-result-")
