"""Events per second on one stream: a burst of small events.

One client opens ``GET /burst?n=N``; each server sends ``N`` events ``data: <i>`` as fast
as its library lets it, then ends the stream. The figure is ``N`` divided by the time from
sending the request until the client has counted the ``N``-th event. FastAPI's native SSE
gets a burst a tenth the size (it is about ten times slower; events per second do not
depend on the size once it is large).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from bench.client import close_all, open_streams
from bench.contenders import AIOHTTP_SSE, STREAMING
from bench.scenario import Contender, Measure, Metric, Scenario, Target


async def _burst(port: int, n: int, timeout: float) -> float:
    began = time.perf_counter()
    streams = await open_streams(port, f"/burst?n={n}", 1, timeout=timeout)
    try:
        await streams.events.reach(n, timeout)
    finally:
        close_all(streams.clients)
    return n / (time.perf_counter() - began)


def measure(contender: Contender, sizes: Mapping[str, Any]) -> dict[str, Measure]:
    """One burst against a fresh server, after a small one to warm it up."""
    n = int(sizes["events"] * contender.scale)
    with contender.server() as server:
        asyncio.run(_burst(server.port, max(1, n // 100), 30))
        return {"events_per_s": Measure(asyncio.run(_burst(server.port, n, 60)))}


SCENARIO = Scenario(
    key="burst",
    title="One stream, a burst of small events",
    how=__doc__.split("\n\n", 1)[1].strip(),
    metrics=(
        Metric(
            "events_per_s",
            "events/s, one stream",
            "events/s",
            higher_is_better=True,
            target=Target("≥ 2x aiohttp-sse", at_least=2.0, versus=AIOHTTP_SSE.key),
        ),
    ),
    contenders=STREAMING,
    measure=measure,
    sizes={"full": {"events": 200_000}, "smoke": {"events": 2_000}},
)
