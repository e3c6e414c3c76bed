"""Serve a connector map on aiohttp: the analog of Pedestal's ``hk/create-connector``.

One permanent aiohttp handler forwards every request to the connector currently attached
to the listening socket, which runs its interceptor chain and writes the response. That
indirection is what lets :meth:`AiohttpConnector.take_over` swap in a new connector (new
interceptors, new routes) without ever closing the socket or the streams already open.

``start()`` works wherever it is called: with no event loop running in the calling thread
(plain ``python``, plain ptpython, a worker thread) the server runs on a shared background
loop thread; with a loop running (``ptpython --asyncio``, IPython and Jupyter kernels) it
runs on that loop, and ``start()`` returns without blocking it.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import threading
from collections.abc import AsyncIterable, Mapping
from typing import Any, Self

from aiohttp import web

from replkit.errors import ReplkitError
from replkit.interceptor import Context, InterceptorError, execute, interceptor

__all__ = ["AiohttpConnector", "ServerError", "create_connector"]

log = logging.getLogger("replkit.server")

DEFAULT_SHUTDOWN_GRACE = 1.0
"""Seconds open requests get to finish when the server stops, after streams are closed."""


class ServerError(ReplkitError):
    """The server could not start: the port is taken, the host does not resolve, ..."""


def create_connector(
    connector_map: Mapping[str, Any], options: Mapping[str, Any] | None = None
) -> AiohttpConnector:
    """Build an aiohttp connector from a connector map; nothing listens until ``start()``.

    ``options`` (may be ``None``, as in the guide) accepts ``shutdown_grace``: seconds open
    requests get to finish on stop, after every event stream has been closed.
    """
    return AiohttpConnector(connector_map, options)


class AiohttpConnector:
    """A connector map made servable: its interceptor chain, host, port and server state."""

    def __init__(
        self, connector_map: Mapping[str, Any], options: Mapping[str, Any] | None = None
    ) -> None:
        for key in ("host", "port", "interceptors"):
            if key not in connector_map:
                raise ReplkitError(
                    f"connector map has no {key!r}; build it with default_connector_map()"
                )
        unknown = set(options or {}) - {"shutdown_grace"}
        if unknown:
            raise ReplkitError(f"unknown aiohttp connector options {sorted(unknown)}")
        self.connector_map = connector_map
        self.host: str = str(connector_map["host"])
        self.port: int = int(connector_map["port"])
        self.shutdown_grace = float((options or {}).get("shutdown_grace", DEFAULT_SHUTDOWN_GRACE))
        self.interceptors = tuple(interceptor(i) for i in connector_map["interceptors"])
        self.initial_context: Context = dict(connector_map.get("initial_context") or {})
        self._server: _Server | None = None

    @property
    def running(self) -> bool:
        """Whether this connector is the one answering on its socket."""
        return self._server is not None

    @property
    def bound_port(self) -> int:
        """The port actually listened on (differs from ``port`` when that is 0)."""
        return self._server.port if self._server is not None else self.port

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://localhost:8890``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.bound_port}"

    def start(self) -> Self:
        """Listen and serve; returns once the socket is listening.

        Raises :class:`ServerError` with a one-line reason if the address cannot be bound.
        """
        if self._server is not None:
            return self
        sockets = _bind(self.host, self.port)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None:
            # Serving on the caller's loop: the sockets already listen, so connections queue
            # in the backlog until this task runs, which happens as soon as the caller yields.
            self._server = _Server(loop, sockets, self, owns_loop=False)
            self._server.track(loop.create_task(self._server.open()))
        else:
            loop = _background.acquire()
            self._server = _Server(loop, sockets, self, owns_loop=True)
            try:
                asyncio.run_coroutine_threadsafe(self._server.open(), loop).result(timeout=10)
            except BaseException:
                self.stop()  # closes the sockets and releases the loop thread
                raise
        return self

    def stop(self) -> Self:
        """Stop listening, close every open stream and let requests finish for a moment.

        From a thread other than the server's this returns once everything is closed. On
        the server's own loop thread it closes the socket at once and finishes the rest in
        a task (await :meth:`stop_async` there to wait for it).
        """
        server, self._server = self._server, None
        if server is None:
            return self
        if server.loop.is_closed():  # its loop ended first (e.g. asyncio.run returned)
            server.close_sockets()
            return self
        if server.on_loop_thread():
            server.close_listeners()
            task = server.loop.create_task(server.shutdown(self.shutdown_grace))
            task.add_done_callback(lambda _: server.release_loop())
            server.track(task)
        else:
            future = asyncio.run_coroutine_threadsafe(
                server.shutdown(self.shutdown_grace), server.loop
            )
            future.result(timeout=self.shutdown_grace + 10)
            server.release_loop()
        return self

    async def stop_async(self) -> None:
        """Stop as :meth:`stop` does, awaiting the end without blocking the caller's loop."""
        server, self._server = self._server, None
        if server is None:
            return
        if server.on_loop_thread():
            await server.shutdown(self.shutdown_grace)
        elif not server.loop.is_closed():
            shutdown = server.shutdown(self.shutdown_grace)
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(shutdown, server.loop))
        server.release_loop()

    def take_over(self, old: AiohttpConnector, *, drop_streams: bool = False) -> Self:
        """Become the connector answering on ``old``'s socket, which never closes meanwhile.

        Requests arriving from now on run this connector's chain. Streams ``old`` opened
        keep flowing to their end unless ``drop_streams`` is true, which closes them.
        """
        if self._server is not None:
            raise ReplkitError(f"cannot take over {old.url}: this connector is already running")
        server, old._server = old._server, None
        if server is None:
            return self.start()
        self._server = server
        server.target = self
        if drop_streams:
            server.call_soon(server.close_streams, old)
        return self

    async def handle(self, request: web.BaseRequest, server: _Server) -> web.StreamResponse:
        """Run the interceptor chain for one request ``server`` received; write the response."""
        context: Context = {**self.initial_context, "request": await _request_map(request)}
        try:
            context = await execute(context, self.interceptors)
            response = context.get("response")
            if response is None:
                response = _plain(404, "Not Found")
            return await self._write(request, response, server)
        except InterceptorError as err:
            log.error(
                "%s %s -> 500: %s", request.method, request.rel_url, err, exc_info=err.exception
            )
            return web.Response(status=500, text="Internal Server Error")
        except _BadResponse as err:
            log.error("%s %s -> 500: %s", request.method, request.rel_url, err)
            return web.Response(status=500, text="Internal Server Error")

    async def _write(
        self, request: web.BaseRequest, response: Any, server: _Server
    ) -> web.StreamResponse:
        status, headers, body = _checked_response(response)
        if not isinstance(body, AsyncIterable):
            return web.Response(status=status, headers=headers, body=body)
        stream = web.StreamResponse(status=status, headers=headers)
        await stream.prepare(request)
        task = asyncio.current_task()
        assert task is not None
        # Tracked on the server, not on self: after a take-over self no longer has one, but
        # its streams must still be closed when the server stops.
        server.streams[task] = (self, body)
        chunks = aiter(body)
        try:
            async for chunk in chunks:
                await stream.write(chunk.encode() if isinstance(chunk, str) else chunk)
            await stream.write_eof()
        except ConnectionError:
            pass  # the client left; the body's cleanup below notices
        except Exception:
            # Headers are out: say why, and cut the connection so that the client sees an
            # incomplete response rather than a complete, truncated one.
            log.exception(
                "%s %s: the response body raised; ending the stream",
                request.method,
                request.rel_url,
            )
            if request.transport is not None:
                request.transport.close()
        finally:
            server.streams.pop(task, None)
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()
        return stream

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<AiohttpConnector {self.url} {state}>"


class _BadResponse(Exception):
    pass


def _checked_response(response: Any) -> tuple[int, dict[str, str], Any]:
    if not isinstance(response, Mapping):
        raise _BadResponse(f"response is {type(response).__name__}, not a dict")
    status = response.get("status")
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise _BadResponse(f"response status {status!r} is not an int between 100 and 599")
    headers: dict[str, str] = {}
    for name, value in (response.get("headers") or {}).items():
        values = value if isinstance(value, list | tuple) else [value]
        headers[str(name)] = ", ".join(map(str, values))
    body = response.get("body")
    if isinstance(body, str):
        body = body.encode()
    elif not (body is None or isinstance(body, bytes | bytearray | AsyncIterable)):
        raise _BadResponse(
            f"response body is {type(body).__name__}; expected str, bytes, None "
            "or an async iterable of chunks"
        )
    return status, headers, body


def _plain(status: int, text: str) -> dict[str, Any]:
    return {
        "status": status,
        "headers": {"Content-Type": "text/plain; charset=UTF-8"},
        "body": text,
    }


async def _request_map(request: web.BaseRequest) -> dict[str, Any]:
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        name = name.lower()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    return {
        "request_method": request.method.lower(),
        "uri": request.rel_url.raw_path,
        "query_string": request.rel_url.raw_query_string or None,
        "headers": headers,
        "body": await request.read(),
        "scheme": request.scheme,
        "server_name": request.url.host,
        "server_port": sockname[1] if sockname else None,
        "remote_addr": request.remote,
        "protocol": f"HTTP/{request.version.major}.{request.version.minor}",
    }


class _Server:
    """The listening sockets and aiohttp's protocol, shared by successive connectors."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sockets: list[socket.socket],
        target: AiohttpConnector,
        *,
        owns_loop: bool,
    ) -> None:
        self.loop = loop
        self.sockets = sockets
        self.port: int = sockets[0].getsockname()[1]
        self._unadopted = list(sockets)
        self.target = target
        self.owns_loop = owns_loop
        self.streams: dict[asyncio.Task[Any], tuple[AiohttpConnector, Any]] = {}
        self._listeners: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        # handler_cancellation: a client that leaves cancels its handler at once, so an idle
        # event stream notices the disconnect now rather than at its next write.
        self.web_server = web.Server(
            self._forward, handler_cancellation=True, access_log=None, loop=loop
        )

    async def _forward(self, request: web.BaseRequest) -> web.StreamResponse:
        return await self.target.handle(request, self)

    async def open(self) -> None:
        while self._unadopted and not self._closed:
            sock = self._unadopted.pop(0)
            self._listeners.append(await self.loop.create_server(self.web_server, sock=sock))

    def on_loop_thread(self) -> bool:
        try:
            return asyncio.get_running_loop() is self.loop
        except RuntimeError:
            return False

    def call_soon(self, fn: Any, *args: Any) -> None:
        if self.on_loop_thread():
            fn(*args)
        else:
            self.loop.call_soon_threadsafe(fn, *args)

    def track(self, task: asyncio.Task[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def close_listeners(self) -> None:
        self._closed = True
        for listener in self._listeners:
            listener.close()
        # Sockets not yet handed to a listener (start() on a loop that has not run yet).
        while self._unadopted:
            self._unadopted.pop().close()

    def close_sockets(self) -> None:
        for sock in self.sockets:
            sock.close()

    def close_streams(self, of: AiohttpConnector | None = None) -> None:
        for task, (owner, body) in list(self.streams.items()):
            if of is not None and owner is not of:
                continue
            close = getattr(body, "close", None)
            if callable(close):
                close()
            else:
                task.cancel()

    async def shutdown(self, grace: float) -> None:
        self.close_listeners()
        self.close_streams()
        self.web_server.pre_shutdown()
        await self.web_server.shutdown(grace)
        for listener in self._listeners:
            await listener.wait_closed()

    def release_loop(self) -> None:
        if self.owns_loop:
            self.owns_loop = False
            _background.release()


class _BackgroundLoop:
    """One event-loop thread shared by all servers started outside a running loop.

    It starts with the first such server and ends with the last, so nothing lingers.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def acquire(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()
                thread = threading.Thread(
                    target=self._run, args=(loop, ready), name="replkit-server", daemon=True
                )
                thread.start()
                ready.wait()
                self._loop, self._thread = loop, thread
            self._users += 1
            return self._loop

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users or self._loop is None:
                return
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        loop.call_soon_threadsafe(loop.stop)
        if thread is not threading.current_thread():
            assert thread is not None
            thread.join(timeout=5)

    @staticmethod
    def _run(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()


_background = _BackgroundLoop()


def _bind(host: str, port: int) -> list[socket.socket]:
    """Listening sockets for every address ``host`` resolves to, all on one port."""
    where = f"{host}:{port}"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise ServerError(f"cannot listen on {where}: {err.strerror}") from None
    sockets: list[socket.socket] = []
    seen: set[Any] = set()
    for family, kind, proto, _, address in infos:
        if address[0] in seen:
            continue
        seen.add(address[0])
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            bind_port = sockets[0].getsockname()[1] if sockets else port
            sock.bind((address[0], bind_port, *address[2:]))
            sock.listen(128)
            sock.setblocking(False)
        except OSError as err:
            sock.close()
            # A second address family the host lacks (no IPv6), or a port 0 that happens to
            # be taken on the other family, costs nothing: the first address serves.
            if sockets and (port == 0 or err.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT)):
                continue
            for s in sockets:
                s.close()
            reason = os.strerror(err.errno).lower() if err.errno else str(err)
            raise ServerError(f"cannot listen on {where}: {reason}") from None
        sockets.append(sock)
    if not sockets:
        raise ServerError(f"cannot listen on {where}: no address to bind")
    return sockets
