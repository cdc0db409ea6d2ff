"""The worker's start on chain: the provider's stake and registrations (Provider.ensure_standing),
then leaving the sources of `leave_sources`, publishing the machine's hardware (base data), and the
live data every `live_data_interval_s` (ogpu_prefect/standing.py does the chain side)."""

from __future__ import annotations

from typing import Any

from ..chain.errors import InvalidInputError
from .configuration import ProviderJobConfiguration
from .provider import Provider


def stand(provider: Provider, config: ProviderJobConfiguration, log: Any) -> None:
    """Blocking (run it in a thread). A source in both `sources` and `leave_sources` is an
    InvalidInputError naming `leave_sources`, before any transaction."""
    both = {s.lower() for s in config.sources} & {s.lower() for s in config.leave_sources}
    if both:
        raise InvalidInputError("leave_sources", f"also in `sources`: {', '.join(sorted(both))}")
    provider.ensure_standing(config.sources, stake=config.stake_wei)
    if config.leave_sources:
        left = provider.leave(config.leave_sources)
        log.info("left %d source(s): %s", len(left), ", ".join(left) or "none was registered")
    if provider.agent is not None:
        return  # the Terminal takes a provider's data from its own key only
    if config.report_hardware:
        try:
            tx = provider.report_hardware()
            log.info("hardware (base data) %s", f"published in {tx}" if tx else "unchanged on chain")
        except Exception as e:  # a description is not worth stopping the worker for
            log.warning("could not publish the hardware description: %s", e)
    if config.live_data_interval_s:
        provider.start_live_data(config.live_data_interval_s, lambda e: log.warning("live data not published: %s", e))
