"""Serve a plain aiohttp :class:`~aiohttp.web.Application` the way replkit serves a
connector map: on a socket that stays open while a reload swaps in a new application.

The application's signals run as ``web.run_app`` runs them: ``on_startup`` (and the first
half of ``cleanup_ctx``) before it answers, ``on_shutdown`` and ``on_cleanup`` when it is
replaced or the server stops. A replaced application finishes its open requests and
streams first (an aiohttp-sse ``EventSourceResponse`` included), then is cleaned up.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

from replkit.errors import ReplkitError
from replkit.server import DEFAULT_SHUTDOWN_GRACE, Connector

__all__ = ["ApplicationConnector"]


class ApplicationConnector(Connector):
    """An aiohttp application, or the awaitable an ``async def`` factory returned, ready to
    be served at ``host:port`` (aiohttp's own default port, on loopback, unless told)."""

    def __init__(
        self,
        app: web.Application | Awaitable[web.Application],
        host: str = "localhost",
        port: int = 8080,
        *,
        name: str = "the application",
        shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE,
    ) -> None:
        if not isinstance(app, web.Application) and not inspect.isawaitable(app):
            raise ReplkitError(f"{name} is {type(app).__name__}, not an aiohttp web.Application")
        super().__init__(host, port, shutdown_grace=shutdown_grace)
        self.name = name
        self._source = app
        self.app: web.Application | None = app if isinstance(app, web.Application) else None
        self._server_of_app: web.Server | None = None

    async def startup(self) -> None:
        """Await the factory if need be, then run the application's startup signals."""
        if self.app is None:
            app = await self._source  # type: ignore[misc]
            if not isinstance(app, web.Application):
                raise ReplkitError(
                    f"{self.name} returned {type(app).__name__}, not an aiohttp web.Application"
                )
            self.app = app
        if self.app.frozen:
            raise ReplkitError(
                f"{self.name} was started before and cannot start again; "
                "serve its factory (module:create_app) to get a fresh one each time"
            )
        # AppRunner runs the startup signals and builds the application's request handling,
        # which our permanent server then calls for each request it routes here.
        runner = web.AppRunner(self.app, handle_signals=False, access_log=None)
        await runner.setup()
        self._server_of_app = runner.server

    def make_request(
        self,
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
        loop: asyncio.AbstractEventLoop,
    ) -> web.BaseRequest:
        """A ``web.Request`` of this application, with its body size limit."""
        assert self._server_of_app is not None, "served before its startup"
        return self._server_of_app.request_factory(message, payload, protocol, writer, task)

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Route the request through the application: its router and middlewares."""
        assert self._server_of_app is not None, "served before its startup"
        return await self._server_of_app.request_handler(request)

    async def shutdown(self) -> None:
        """Run ``on_shutdown``: the application closes its long-running responses there."""
        if self.app is not None and self._server_of_app is not None:
            await self.app.shutdown()

    async def cleanup(self) -> None:
        """Run ``on_cleanup`` and the second half of ``cleanup_ctx``."""
        if self.app is not None and self._server_of_app is not None:
            await self.app.cleanup()
