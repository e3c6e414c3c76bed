"""Idle open streams: memory per stream, 10,000 streams on one process, and stopping it.

The servers send a heartbeat every 5 s (``BENCH_HEARTBEAT=5``), so that the CPU window
sees each stream's once. After 50 streams of ``GET /idle`` are open (lazy imports done,
buffers warm), the server's RSS is read from ``/proc/<pid>/status``; then 3,000 more are
opened (200 connecting at a time) and the growth divided by 3,000 is the memory per idle
stream. More are opened up to 10,000: the RSS then, and the server's CPU time
(``/proc/<pid>/stat``) over 5 s of nothing but heartbeats, as a percentage of one core.
Then SIGTERM, with the 10,000 streams open: the time until the process has exited; a
server not gone after 5 s is killed and counted as "> 5000 ms". A server that cannot open
them all in time (50 in 30 s, 3,000 in 60 s, the rest in 90 s) fails the repetition.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from bench.client import close_all, open_streams
from bench.contenders import IDLE
from bench.procs import Server
from bench.scenario import Contender, Measure, Metric, Scenario, Target

HEARTBEAT = 5.0
WARM = 50


async def _idle_streams(server: Server, sizes: Mapping[str, Any]) -> dict[str, Measure]:
    streams = await open_streams(server.port, "/idle", WARM, timeout=30)
    try:
        before = server.rss_kib()
        await open_streams(server.port, "/idle", sizes["few"], streams, timeout=60)
        per_stream = (server.rss_kib() - before) / sizes["few"]
        rest = sizes["many"] - sizes["few"] - WARM
        await open_streams(server.port, "/idle", rest, streams, timeout=90)
        rss = server.rss_kib() / 1024
        cpu, began = server.cpu_seconds(), time.perf_counter()
        await asyncio.sleep(sizes["idle_seconds"])  # the window: heartbeats only
        cpu_percent = (server.cpu_seconds() - cpu) / (time.perf_counter() - began) * 100
        exit_seconds = await asyncio.to_thread(server.terminate, sizes["exit_patience"])
    finally:
        close_all(streams.clients)
    exited = (
        Measure(sizes["exit_patience"] * 1000, over=True, note="killed after SIGTERM")
        if exit_seconds is None
        else Measure(exit_seconds * 1000)
    )
    return {
        "kib_per_stream": Measure(per_stream),
        "rss_mib": Measure(rss),
        "idle_cpu": Measure(cpu_percent),
        "exit_ms": exited,
    }


def measure(contender: Contender, sizes: Mapping[str, Any]) -> dict[str, Measure]:
    """One fresh server: its idle streams, then its exit."""
    with contender.server({"BENCH_HEARTBEAT": str(HEARTBEAT)}) as server:
        return asyncio.run(_idle_streams(server, sizes))


SCENARIO = Scenario(
    key="streams",
    title="Idle open streams",
    how=__doc__.split("\n\n", 1)[1].strip(),
    metrics=(
        Metric(
            "kib_per_stream",
            "memory per idle stream (RSS over 3,000 streams)",
            "KiB",
            higher_is_better=False,
            target=Target("≤ 10 KiB", at_most=10),
        ),
        Metric("rss_mib", "RSS with 10,000 streams open", "MiB", higher_is_better=False),
        Metric(
            "idle_cpu",
            "CPU with 10,000 idle streams (heartbeat 5 s)",
            "% of a core",
            higher_is_better=False,
        ),
        Metric(
            "exit_ms",
            "exit on SIGTERM with 10,000 streams open",
            "ms",
            higher_is_better=False,
            target=Target("< 1 s with 10k", at_most=1000),
        ),
    ),
    contenders=IDLE,
    measure=measure,
    sizes={
        "full": {"few": 3_000, "many": 10_000, "idle_seconds": 5.0, "exit_patience": 5.0},
        "smoke": {"few": 20, "many": 100, "idle_seconds": 0.5, "exit_patience": 2.0},
    },
    reps=2,
)
