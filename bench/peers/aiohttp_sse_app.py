"""The benchmark's routes (``bench/apps/common.py``) on aiohttp with aiohttp-sse.

``GET /`` is a bare aiohttp handler: the baseline of the requests-per-second scenario.
Run as users run it, with ``web.run_app``: ``python -m bench.peers.aiohttp_sse_app PORT``.
With ``--bare-idle``, ``GET /idle`` is a bare ``StreamResponse`` writing its heartbeats
itself, no library: what an idle stream costs aiohttp alone, the floor of the idle-stream
and storm scenarios. With ``--same-work``, every response gets what replkit's default
interceptors give it, done the way an aiohttp user would: a middleware adding the seven
secure headers with a fresh CSP nonce, and aiohttp's access log on at INFO (stderr), as
``replkit serve`` logs every response.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import sys
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp_sse import sse_response

from bench.apps.common import (
    DISCONNECTS,
    HEARTBEAT,
    HELLO,
    Broadcast,
    noticed_disconnect,
    publish_many,
)
from replkit.http import SECURE_HEADERS  # the header table only: no replkit code runs

broadcast = Broadcast()


async def home_page(_request: web.Request) -> web.Response:
    """``GET /``."""
    return web.Response(text=HELLO)


async def burst(request: web.Request) -> web.StreamResponse:
    """``GET /burst?n=N``."""
    async with sse_response(request, ping_interval=HEARTBEAT) as stream:
        for i in range(int(request.query["n"])):
            await stream.send(str(i))
    return stream


async def idle(request: web.Request) -> web.StreamResponse:
    """``GET /idle``: pings only; aiohttp-sse learns the client left when a ping fails."""
    try:
        async with sse_response(request, ping_interval=HEARTBEAT) as stream:
            await stream.wait()
    finally:
        noticed_disconnect()
    return stream


async def bare_idle(request: web.Request) -> web.StreamResponse:
    """``GET /idle`` with ``--bare-idle``: the event-stream head, then a heartbeat comment
    every :data:`HEARTBEAT` seconds, written by hand."""
    stream = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await stream.prepare(request)
    try:
        while True:
            await asyncio.sleep(HEARTBEAT)
            await stream.write(b": ping\n\n")
    finally:
        noticed_disconnect()


async def disconnects(_request: web.Request) -> web.Response:
    """``GET /disconnects``."""
    return web.json_response({"disconnects": DISCONNECTS})


async def topic(request: web.Request) -> web.StreamResponse:
    """``GET /topic``: this subscriber's queue, sent as it fills."""
    queue = broadcast.subscribe()
    try:
        async with sse_response(request, ping_interval=HEARTBEAT) as stream:
            while True:
                await stream.send(await queue.get())
    finally:
        broadcast.unsubscribe(queue)


async def subscribers(_request: web.Request) -> web.Response:
    """``GET /subscribers``."""
    return web.json_response({"subscribers": len(broadcast.queues)})


async def publish(request: web.Request) -> web.Response:
    """``POST /publish?n=N&size=B``."""
    n = int(request.query["n"])
    await publish_many(broadcast.publish, n, int(request.query["size"]))
    return web.json_response({"published": n})


@web.middleware
async def secure_headers(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """The secure headers replkit's defaults add, with a nonce for each request."""
    nonce = secrets.token_urlsafe(16)
    request["csp_nonce"] = nonce
    response = await handler(request)
    for name, value in SECURE_HEADERS.items():
        response.headers.setdefault(name, value.replace("{nonce}", nonce))
    return response


def create_app(bare_idle_stream: bool = False, same_work: bool = False) -> web.Application:
    """The app, its routes added as aiohttp's documentation does."""
    app = web.Application(middlewares=[secure_headers] if same_work else [])
    app.router.add_get("/", home_page)
    app.router.add_get("/burst", burst)
    app.router.add_get("/idle", bare_idle if bare_idle_stream else idle)
    app.router.add_get("/disconnects", disconnects)
    app.router.add_get("/topic", topic)
    app.router.add_get("/subscribers", subscribers)
    app.router.add_post("/publish", publish)
    return app


if __name__ == "__main__":
    bare, same = "--bare-idle" in sys.argv[2:], "--same-work" in sys.argv[2:]
    if same:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    web.run_app(create_app(bare, same), host="127.0.0.1", port=int(sys.argv[1]))
