"""The one retry rule (chain/pacing.RetryPolicy and its per-request Retry), as the RPC, the IPFS
upload and the event watch follow it: the pauses, the outage and try limits, the rate-limit bound.
No network: the rule alone (tests/test_rate_limits.py, test_storage.py, test_watch.py and
test_fault_proxy.py drive it against real servers)."""

from __future__ import annotations

import math

from ogpu_prefect.chain.pacing import RetryPolicy


def test_pauses_double_up_to_the_cap() -> None:
    retry = RetryPolicy(outage_s=math.inf, backoff=0.5, max_backoff=2.0).start()
    assert [retry.failed() for _ in range(5)] == [0.5, 1.0, 2.0, 2.0, 2.0]
    assert retry.tries == 5


def test_an_answer_ends_the_outage() -> None:
    retry = RetryPolicy(outage_s=math.inf, backoff=0.5).start()
    retry.failed(), retry.failed()
    retry.answered()
    assert (retry.tries, retry.failed()) == (0, 0.5)


def test_gives_up_after_max_tries_or_the_outage() -> None:
    three = RetryPolicy(outage_s=math.inf, backoff=0.0, max_tries=3).start()
    assert [three.failed() for _ in range(3)] == [0.0, 0.0, None]  # 3 attempts, 2 pauses
    assert RetryPolicy(outage_s=0, backoff=0.05).start().failed() is None  # no outage waited out


def test_refusals_are_no_outage_and_end_at_throttled_s() -> None:
    retry = RetryPolicy(outage_s=0, backoff=0.05, throttled_s=900).start()
    assert retry.refused() and retry.refused()
    assert RetryPolicy(throttled_s=-1).start().refused() is False


def test_a_read_that_raced_a_block_is_asked_again_about_a_second() -> None:
    p = RetryPolicy()
    waits = [p.race_delay(a) for a in range(p.state_race_tries - 1)]
    assert waits[0] == 0.01 and max(waits) == 0.2 and 0.5 < sum(waits) < 1.5
