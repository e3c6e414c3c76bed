"""A Starlette app with an sse-starlette stream, the app the save -> served scenario edits
under ``uvicorn --reload`` (copied into a scratch directory as ``main.py``)."""

import asyncio
from collections.abc import AsyncIterator

from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route


async def page(_request: Request) -> PlainTextResponse:
    """``GET /``: the text each save changes."""
    return PlainTextResponse("Hello, World!")


async def ticks(_request: Request) -> EventSourceResponse:
    """``GET /ticks``: ten events a second apart."""

    async def events() -> AsyncIterator[dict]:
        for i in range(10):
            yield {"event": "tick", "data": i}
            await asyncio.sleep(1)

    return EventSourceResponse(events())


app = Starlette(routes=[Route("/", page), Route("/ticks", ticks)])
