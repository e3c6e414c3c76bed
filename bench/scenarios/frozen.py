"""Publishing while one subscriber is frozen.

100 clients read ``GET /topic``; one more sends its request and never reads (a socket with
a 4 KiB receive buffer). Then ``POST /publish?n=5000&size=100``: the app publishes 5,000
events of 100 bytes from its event loop, yielding to it every 100 events. Two figures: the
publisher's rate (events over the time until ``POST /publish`` is answered, once all are
published) and the delivered rate (events over the time until every reading client has
every event). Subscriber buffers hold the whole flood, so nobody is cut: the frozen client
only holds its events, and must not slow the others. FastAPI's native SSE gets a tenth of
the events (it delivers about sixty times slower).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from bench.client import close_all, frozen_stream, open_streams
from bench.contenders import STREAMING
from bench.procs import Server
from bench.scenario import Contender, Measure, Metric, Scenario
from bench.scenarios.fanout import publish, subscribed


async def _flood(server: Server, readers: int, events: int) -> dict[str, Measure]:
    streams = await open_streams(server.port, "/topic", readers, timeout=60)
    frozen = await asyncio.to_thread(frozen_stream, server.port, "/topic")
    try:
        await asyncio.to_thread(subscribed, server, readers + 1, 60)
        began = time.perf_counter()
        await asyncio.to_thread(publish, server, events, 100)
        published = time.perf_counter() - began
        await streams.events.reach(readers * events, 120)
        delivered = time.perf_counter() - began
    finally:
        close_all(streams.clients)
        frozen.close()
    return {
        "published_per_s": Measure(events / published),
        "delivered_per_s": Measure(events / delivered),
    }


def measure(contender: Contender, sizes: Mapping[str, Any]) -> dict[str, Measure]:
    """One flood on a fresh server."""
    with contender.server() as server:
        events = int(sizes["events"] * contender.scale)
        return asyncio.run(_flood(server, sizes["readers"], events))


SCENARIO = Scenario(
    key="frozen",
    title="Publisher throughput with one frozen subscriber",
    how=__doc__.split("\n\n", 1)[1].strip(),
    metrics=(
        Metric("published_per_s", "publisher, events/s", "events/s", higher_is_better=True),
        Metric("delivered_per_s", "delivered to 100 readers, events/s", "events/s", True),
    ),
    contenders=STREAMING,
    measure=measure,
    sizes={"full": {"readers": 100, "events": 5_000}, "smoke": {"readers": 5, "events": 200}},
    reps=2,
)
