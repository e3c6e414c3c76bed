"""The benchmark's routes (``bench/apps/common.py``) on FastAPI with its native server-sent
events (``fastapi.sse.EventSourceResponse``, FastAPI 0.135+).

Run as users run it: ``uvicorn bench.peers.fastapi_app:app``. FastAPI's heartbeat is a module
constant, ``fastapi.routing._PING_INTERVAL`` (15 s), which its own tests patch; it is set
to :data:`~bench.apps.common.HEARTBEAT` here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import fastapi.routing
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
from fastapi.sse import EventSourceResponse

from bench.apps.common import (
    DISCONNECTS,
    HEARTBEAT,
    HELLO,
    Broadcast,
    noticed_disconnect,
    publish_many,
)

fastapi.routing._PING_INTERVAL = HEARTBEAT

app = FastAPI()
broadcast = Broadcast()


@app.get("/", response_class=PlainTextResponse)
async def home_page() -> str:
    """``GET /``."""
    return HELLO


@app.get("/burst", response_class=EventSourceResponse)
async def burst(n: int) -> AsyncIterator[int]:
    """``GET /burst?n=N``: plain values, JSON-encoded by FastAPI (``data: 7``)."""
    for i in range(n):
        yield i


@app.get("/idle", response_class=EventSourceResponse)
async def idle() -> AsyncIterator[int]:
    """``GET /idle``: pings only; the generator is closed when the client leaves."""
    try:
        await asyncio.get_running_loop().create_future()  # never resolved
        yield 0
    finally:
        noticed_disconnect()


@app.get("/disconnects")
async def disconnects() -> dict:
    """``GET /disconnects``."""
    return {"disconnects": DISCONNECTS}


@app.get("/topic", response_class=EventSourceResponse)
async def topic() -> AsyncIterator[str]:
    """``GET /topic``: this subscriber's queue, sent as it fills."""
    queue = broadcast.subscribe()
    try:
        while True:
            yield await queue.get()
    finally:
        broadcast.unsubscribe(queue)


@app.get("/subscribers")
async def subscribers() -> dict:
    """``GET /subscribers``."""
    return {"subscribers": len(broadcast.queues)}


@app.post("/publish")
async def publish(n: int, size: int) -> dict:
    """``POST /publish?n=N&size=B``."""
    await publish_many(broadcast.publish, n, size)
    return {"published": n}
