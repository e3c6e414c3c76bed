"""A plain aiohttp app with an aiohttp-sse stream, the app the save -> served scenario edits
under ``replkit serve``, aiohttp-devtools' ``adev runserver`` and watchfiles'
``run_process`` (copied into a scratch directory as ``web_app.py``)."""

import asyncio

from aiohttp import web
from aiohttp_sse import sse_response


async def page(_request: web.Request) -> web.Response:
    """``GET /``: the text each save changes."""
    return web.Response(text="Hello, World!")


async def ticks(request: web.Request) -> web.StreamResponse:
    """``GET /ticks``: ten events a second apart."""
    async with sse_response(request) as stream:
        for i in range(10):
            await stream.send(str(i), event="tick")
            await asyncio.sleep(1)
    return stream


def create_app() -> web.Application:
    """The app."""
    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/ticks", ticks)
    return app
