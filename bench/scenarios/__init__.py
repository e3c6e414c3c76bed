"""The scenarios, in the order ``python -m bench`` runs them and ``RESULTS.md`` shows them."""

from __future__ import annotations

from bench.scenario import Scenario
from bench.scenarios import (
    burst,
    disconnect,
    fanout,
    frozen,
    requests,
    save_to_served,
    storm,
    streams,
    workers,
)

SCENARIOS: tuple[Scenario, ...] = (
    requests.SCENARIO,
    burst.SCENARIO,
    streams.SCENARIO,
    storm.SCENARIO,
    disconnect.SCENARIO,
    fanout.SCENARIO,
    frozen.SCENARIO,
    save_to_served.SCENARIO,
    workers.SCENARIO,
)
