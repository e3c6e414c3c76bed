"""One event to many subscribers of a topic: the time until every one of them has it.

Subscribers open ``GET /topic`` (200 connecting at a time) until the app counts them all
at ``GET /subscribers``. Then, several times with a pause between, the client sends
``POST /publish?n=1`` and measures the time from sending it until every subscriber has
counted the event; the figure is the median. Measured with 1,000 subscribers, then again
once 9,000 more have joined. replkit publishes to a ``Topic``; the peers to a set of
bounded queues, one per subscriber (``Broadcast`` in ``bench/apps/common.py``).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Mapping
from typing import Any

from bench.client import Streams, close_all, open_streams
from bench.contenders import STREAMING
from bench.procs import BenchError, Server, http, poll
from bench.scenario import Contender, Measure, Metric, Scenario

PAUSE = 0.2  # between two events: the server goes idle again


def subscribed(server: Server, count: int, timeout: float) -> None:
    """Return once the app counts ``count`` subscribers of its topic."""

    def enough() -> bool:
        status, body = http(server.port, "/subscribers")
        return status == 200 and json.loads(body)["subscribers"] >= count

    poll(enough, timeout, f"{count} subscribers", step=0.05)


def publish(server: Server, n: int, size: int) -> None:
    """Have the app publish ``n`` events of ``size`` bytes; return once it has."""
    status, body = http(server.port, f"/publish?n={n}&size={size}", "POST", timeout=300)
    if status != 200:
        raise BenchError(f"POST /publish answered {status}: {body[:200]!r}")


async def _to_all(server: Server, streams: Streams, events: int) -> float:
    await asyncio.to_thread(subscribed, server, len(streams.clients), 60)
    return await time_to_all(server, streams, events)


async def time_to_all(server: Server, streams: Streams, events: int) -> float:
    """Publish ``events`` events one at a time, a pause between; the median time (ms) from
    asking for one until every client of ``streams`` has it."""
    clients = len(streams.clients)
    times = []
    for _ in range(events):
        target = streams.events.value + clients
        began = time.perf_counter()
        await asyncio.to_thread(publish, server, 1, 16)
        await streams.events.reach(target, 60)
        times.append(time.perf_counter() - began)
        await asyncio.sleep(PAUSE)
    return statistics.median(times) * 1000


async def _fanout(server: Server, sizes: Mapping[str, Any]) -> dict[str, Measure]:
    streams = await open_streams(server.port, "/topic", sizes["few"], timeout=60)
    try:
        few = await _to_all(server, streams, sizes["events"])
        more = sizes["many"] - sizes["few"]
        await open_streams(server.port, "/topic", more, streams, timeout=180)
        many = await _to_all(server, streams, sizes["events"])
    finally:
        close_all(streams.clients)
    return {"few_ms": Measure(few), "many_ms": Measure(many)}


def measure(contender: Contender, sizes: Mapping[str, Any]) -> dict[str, Measure]:
    """A fresh server: its fan-out to 1,000 subscribers, then to 10,000."""
    with contender.server() as server:
        return asyncio.run(_fanout(server, sizes))


SCENARIO = Scenario(
    key="fanout",
    title="Fan-out of one event to a topic's subscribers",
    how=__doc__.split("\n\n", 1)[1].strip(),
    metrics=(
        Metric("few_ms", "one event to 1,000 subscribers", "ms", higher_is_better=False),
        Metric("many_ms", "one event to 10,000 subscribers", "ms", higher_is_better=False),
    ),
    contenders=STREAMING,
    measure=measure,
    sizes={
        "full": {"few": 1_000, "many": 10_000, "events": 3},
        "smoke": {"few": 10, "many": 50, "events": 1},
    },
    reps=2,
)
