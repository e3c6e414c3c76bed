"""How soon a server notices that a client left an idle stream.

A client opens ``GET /idle`` (heartbeat every 15 s, the libraries' default), waits 0.2 s,
then closes its connection and notes ``time.monotonic()``. Each app notes the same clock
where its users' code learns that the stream is over (replkit's ``on_client_disconnect``;
the handler's ``finally`` with aiohttp-sse; the generator's ``finally`` with
sse-starlette and FastAPI) and lists those times at ``GET /disconnects``, which the client
polls. The figure is the difference; a server that has not noticed after 2 s counts as
"> 2000 ms" (aiohttp-sse notices at its next heartbeat).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from typing import Any

from bench.client import open_streams
from bench.contenders import STREAMING
from bench.procs import Server, http
from bench.scenario import Contender, Measure, Metric, Scenario, Target

PATIENCE = 2.0


def _noticed(server: Server, before: int) -> list[float]:
    status, body = http(server.port, "/disconnects")
    times = json.loads(body)["disconnects"] if status == 200 else []
    return times[before:]


async def _leave(server: Server, settle: float) -> Measure:
    before = len(await asyncio.to_thread(_noticed, server, 0))
    streams = await open_streams(server.port, "/idle", 1, timeout=30)
    await asyncio.sleep(settle)  # an idle stream, not one just answered
    streams.clients[0].close()
    left = time.monotonic()
    while time.monotonic() - left < PATIENCE:
        noticed = await asyncio.to_thread(_noticed, server, before)
        if noticed:
            return Measure((noticed[0] - left) * 1000)
        await asyncio.sleep(0.005)
    return Measure(PATIENCE * 1000, over=True, note="not noticed within 2 s")


def measure(contender: Contender, sizes: Mapping[str, Any]) -> dict[str, Measure]:
    """One client leaving a fresh server's idle stream."""
    with contender.server({"BENCH_HEARTBEAT": "15"}) as server:
        return {"noticed_ms": asyncio.run(_leave(server, sizes["settle"]))}


SCENARIO = Scenario(
    key="disconnect",
    title="Disconnect noticed",
    how=__doc__.split("\n\n", 1)[1].strip(),
    metrics=(
        Metric(
            "noticed_ms",
            "disconnect noticed after",
            "ms",
            higher_is_better=False,
            target=Target("< 100 ms", at_most=100),
        ),
    ),
    contenders=STREAMING,
    measure=measure,
    sizes={"full": {"settle": 0.2}, "smoke": {"settle": 0.05}},
)
