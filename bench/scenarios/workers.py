"""One event to 2,000 clients spread over 4 workers, against one process.

replkit serves the benchmark's app three ways: one process with its topic in the process;
one process with the topic in Redis (``REPLKIT_REDIS_URL``); 4 workers
(``--workers 4``) sharing the topic through Redis, so each event goes through Redis and
out of every worker's reader. A ``redis-server`` of the benchmark's own runs on a free
port. The 2,000 clients open ``GET /topic?lastEventId=<the topic's start>`` (200 at a
time), so that none can miss an event however late its subscription lands; a first event,
not timed, reaches them all. Then, several times with a pause between, ``POST
/publish?n=1`` and the time until the last of the 2,000 clients has the event; the figure
is the median.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any

from bench.client import close_all, open_streams
from bench.contenders import REPLKIT
from bench.procs import BenchError, free_port, http, poll
from bench.scenario import Contender, Measure, Metric, Scenario
from bench.scenarios.fanout import time_to_all

_REDIS = "REPLKIT_REDIS_URL"

ONE_PROCESS = replace(REPLKIT, key="replkit", title="replkit, one process")
ONE_PROCESS_REDIS = replace(REPLKIT, key="replkit_redis", title="one process, Redis", replkit=False)
WORKERS = Contender(
    "replkit_workers",
    "4 workers, Redis",
    lambda port: [*REPLKIT.command(port), "--workers", "4"],
)


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A redis-server of the benchmark's own on a free port; its URL."""
    port = free_port()
    with tempfile.TemporaryDirectory() as directory:
        process = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--dir", directory],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            poll(lambda: _answers(port), 10, "redis-server")
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.terminate()
            process.wait(10)


def _answers(port: int) -> bool:
    with (
        contextlib.suppress(OSError),
        socket.create_connection(("127.0.0.1", port), timeout=1) as conn,
    ):
        conn.sendall(b"PING\r\n")
        return conn.recv(16).startswith(b"+PONG")
    return False


async def _spread(server: Any, sizes: Mapping[str, Any]) -> dict[str, Measure]:
    status, body = http(server.port, "/start")
    if status != 200:
        raise BenchError(f"GET /start answered {status}")
    start = json.loads(body)["start"]
    streams = await open_streams(
        server.port, f"/topic?lastEventId={start}", sizes["clients"], timeout=120
    )
    try:
        await time_to_all(server, streams, 1)  # every client subscribed, however late
        return {"last_ms": Measure(await time_to_all(server, streams, sizes["events"]))}
    finally:
        close_all(streams.clients)


def measure(contender: Contender, sizes: Mapping[str, Any]) -> dict[str, Measure]:
    """A fresh server (and, for the Redis contenders, a fresh Redis): one event to all."""
    with contextlib.ExitStack() as stack:
        env = {}
        if contender is not ONE_PROCESS:
            env[_REDIS] = stack.enter_context(redis_server())
        with contender.server(env=env) as server:
            return asyncio.run(_spread(server, sizes))


SCENARIO = Scenario(
    key="workers",
    title="One event to 2,000 clients over 4 workers",
    how=__doc__.split("\n\n", 1)[1].strip(),
    metrics=(
        Metric("last_ms", "one event to the last of 2,000 clients", "ms", higher_is_better=False),
    ),
    contenders=(ONE_PROCESS, ONE_PROCESS_REDIS, WORKERS),
    measure=measure,
    sizes={"full": {"clients": 2_000, "events": 5}, "smoke": {"clients": 20, "events": 1}},
    reps=2,
)
