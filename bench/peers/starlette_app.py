"""The benchmark's routes (``bench/apps/common.py``) on Starlette with sse-starlette.

Run as users run it: ``uvicorn bench.peers.starlette_app:app`` (uvicorn's defaults, which
pick uvloop and httptools when installed, as ``uvicorn[standard]`` does).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from bench.apps.common import (
    DISCONNECTS,
    HEARTBEAT,
    HELLO,
    Broadcast,
    noticed_disconnect,
    publish_many,
)

broadcast = Broadcast()


async def home_page(_request: Request) -> PlainTextResponse:
    """``GET /``."""
    return PlainTextResponse(HELLO)


async def burst(request: Request) -> EventSourceResponse:
    """``GET /burst?n=N``."""
    n = int(request.query_params["n"])

    async def events() -> AsyncIterator[dict]:
        for i in range(n):
            yield {"data": i}

    return EventSourceResponse(events(), ping=HEARTBEAT)


async def idle(_request: Request) -> EventSourceResponse:
    """``GET /idle``: pings only; the generator is closed when the client leaves."""

    async def events() -> AsyncIterator[dict]:
        try:
            await asyncio.get_running_loop().create_future()  # never resolved
            yield {}
        finally:
            noticed_disconnect()

    return EventSourceResponse(events(), ping=HEARTBEAT)


async def disconnects(_request: Request) -> JSONResponse:
    """``GET /disconnects``."""
    return JSONResponse({"disconnects": DISCONNECTS})


async def topic(_request: Request) -> EventSourceResponse:
    """``GET /topic``: this subscriber's queue, sent as it fills."""
    queue = broadcast.subscribe()

    async def events() -> AsyncIterator[dict]:
        try:
            while True:
                yield {"data": await queue.get()}
        finally:
            broadcast.unsubscribe(queue)

    return EventSourceResponse(events(), ping=HEARTBEAT)


async def subscribers(_request: Request) -> JSONResponse:
    """``GET /subscribers``."""
    return JSONResponse({"subscribers": len(broadcast.queues)})


async def publish(request: Request) -> JSONResponse:
    """``POST /publish?n=N&size=B``."""
    n = int(request.query_params["n"])
    await publish_many(broadcast.publish, n, int(request.query_params["size"]))
    return JSONResponse({"published": n})


app = Starlette(
    routes=[
        Route("/", home_page),
        Route("/burst", burst),
        Route("/idle", idle),
        Route("/disconnects", disconnects),
        Route("/topic", topic),
        Route("/subscribers", subscribers),
        Route("/publish", publish, methods=["POST"]),
    ]
)
