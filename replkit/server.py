"""A listening socket that outlives whatever answers on it.

A :class:`Server` owns the sockets bound at one address and aiohttp's runner over them.
Each connection is first replkit's own (:mod:`replkit.connection`), which answers plain
requests itself and hands anything else to aiohttp's protocol. The server hands every
request to its current *target*, a :class:`Connector`: the interceptor chain of
a connector map (:mod:`replkit.aiohttp`) or an aiohttp application
(:mod:`replkit.application`). :meth:`Connector.take_over` makes a new connector the target
while the socket stays open, which is how a restart or a hot reload changes what is served
without refusing a request: requests already running finish on the connector that took
them, every later one goes to the new connector, keep-alive connections included.

``start()`` works wherever it is called: with no event loop running in the calling thread
(plain ``python``, plain ptpython, a worker thread) the server runs on a shared background
loop thread; with a loop running (``ptpython --asyncio``, IPython and Jupyter kernels) it
runs on that loop, and ``start()`` returns without blocking it.

The server holds out against hostile or broken clients with the limits of the connector
that starts it (:mod:`replkit.limits`). Every response is logged on ``replkit.access`` (see
:attr:`Connector.access_log`).

Process-wide state, all of it: the servers open in this process, by bound address
(:func:`open_servers`), and the background loop thread, which lives while a server uses it;
and while a server stops, the garbage collector, paused (see :meth:`Server.close`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import os
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, ClassVar, Self

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

from replkit.access_log import ACCESS_LOG, AccessLog, AiohttpAccessLogger
from replkit.connection import Connection, Outbox, PlainRequest
from replkit.errors import ReplkitError
from replkit.limits import BACKLOG, GuardedServer, Limits, LogThrottle, capacity, log_accept_errors

__all__ = [
    "Connector",
    "Server",
    "ServerError",
    "find_server",
    "open_servers",
]

log = logging.getLogger("replkit.server")

DEFAULT_SHUTDOWN_GRACE = 1.0
"""Seconds open requests get to finish when the server stops, after streams are closed."""

SWAP_TIMEOUT = 10.0
"""Seconds a thread waits for the server's loop to start, stop or swap a connector."""

_TARGET = web.RequestKey("replkit.server/target", object)


class ServerError(ReplkitError):
    """The server could not start: the port is taken, the host does not resolve, ..."""


class Connector:
    """What answers requests on a :class:`Server`, and the handle that starts and stops it.

    Subclasses answer requests (:meth:`handle`, and :meth:`make_request` if they need their
    own request class) and may hook into the server's life: :meth:`startup` runs before the
    connector answers its first request, :meth:`shutdown` when the server stops (before
    open requests are awaited) and :meth:`cleanup` after its last request ended, whether
    the server stopped or another connector took over.

    A connector that was taken over keeps controlling the server it served: its ``stop()``
    stops that server, and ``take_over`` from it works, so a module holding an old
    connector in its atom still reaches the one running server.

    ``limits`` are the server's when this connector starts it (:class:`Limits`);
    ``access_log`` is the logger of the requests it answers (``None``: not logged).
    ``answers_plain`` says that :meth:`handle` also takes a
    :class:`~replkit.connection.PlainRequest` (see :mod:`replkit.connection`).
    """

    answers_plain: ClassVar[bool] = False

    def __init__(
        self,
        host: str,
        port: int,
        *,
        shutdown_grace: float,
        limits: Limits | None = None,
        access_log: logging.Logger | None = ACCESS_LOG,
    ) -> None:
        self.host = host
        self.port = port
        self.declared = (host, port)
        """The address asked for, before an override moved it (see replkit.connector)."""
        self.shutdown_grace = shutdown_grace
        self.limits = limits or Limits()
        self.access_log = access_log
        self._server: Server | None = None
        self._inflight: set[asyncio.Task[Any]] = set()
        self._phase = "new"  # -> "started" -> "shut down" -> "cleaned up"

    @property
    def running(self) -> bool:
        """Whether the server this connector started, or took over, is serving."""
        return self._server is not None and self._server.is_open

    @property
    def current(self) -> bool:
        """Whether this connector is the one answering new requests on its server."""
        return self.running and self._server is not None and self._server.target is self

    @property
    def bound_port(self) -> int:
        """The port actually listened on (differs from ``port`` when that is 0)."""
        return self._server.port if self._server is not None else self.port

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://localhost:8890``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.bound_port}"

    @property
    def server(self) -> Server | None:
        """The server this connector started or took over, open or not."""
        return self._server

    def start(self, sockets: list[socket.socket] | None = None) -> Self:
        """Listen and serve; returns once the socket is listening. ``sockets``, if given,
        are listening already (a worker's, shared with its siblings): serve on those.

        Raises :class:`ServerError` with a one-line reason if the address cannot be bound.
        """
        if self.running:
            return self
        sockets = sockets or bind(self.host, self.port)
        loop = _running_loop()
        if loop is not None:
            # Serving on the caller's loop: the sockets already listen, so connections queue
            # in the backlog until this task runs, which happens as soon as the caller yields.
            self._server = Server(loop, sockets, self, self.port, owns_loop=False)
            self._server.track(loop.create_task(self._server.open()))
            return self
        loop = _background.acquire()
        self._server = server = Server(loop, sockets, self, self.port, owns_loop=True)
        try:
            server.run(server.open())
        except BaseException:
            server.run(server.close(0))
            server.release_loop()
            raise
        return self

    def stop(self) -> Self:
        """Stop listening, close every open stream and let requests finish for a moment.

        From a thread other than the server's this returns once everything is closed. On
        the server's own loop thread it cannot wait: the rest happens in a task, which
        starts with closing the socket as soon as the caller yields to the loop (await
        :meth:`stop_async` there to wait for the end).
        """
        server = self._server
        if server is None or not server.is_open:
            return self
        if server.loop.is_closed():  # its loop ended first (e.g. asyncio.run returned)
            server.abandon()
        elif server.on_loop_thread():
            server.stop_listening()
            task = server.loop.create_task(server.close(self.shutdown_grace))
            task.add_done_callback(lambda _: server.release_loop())
            server.track(task)
        else:
            server.run(server.close(self.shutdown_grace), self.shutdown_grace + SWAP_TIMEOUT)
            server.release_loop()
        return self

    async def stop_async(self) -> None:
        """Stop as :meth:`stop` does, awaiting the end without blocking the caller's loop."""
        server = self._server
        if server is None or not server.is_open:
            return
        if server.on_loop_thread():
            await server.close(self.shutdown_grace)
        elif server.loop.is_closed():
            server.abandon()
        else:
            close = server.close(self.shutdown_grace)
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(close, server.loop))
        server.release_loop()

    def take_over(self, old: Connector, *, drop_streams: bool = False) -> Self:
        """Become the connector answering on ``old``'s socket, which never closes meanwhile.

        Requests arriving from now on run on this connector. Requests and streams ``old``
        took run to their end, unless ``drop_streams`` is true, which closes them. Returns
        once this connector answers; on the server's own loop thread a connector with an
        asynchronous :meth:`startup` cannot be waited for and takes over once that is done.
        """
        if self.running:
            raise ReplkitError(f"cannot take over {old.url}: this connector is already running")
        server = old._server
        if server is None or not server.is_open:
            return self.start()
        self._server = server
        if server.on_loop_thread():
            if type(self).startup is Connector.startup:
                server.attach(self, drop_streams)
            else:
                server.track(server.loop.create_task(server.replace(self, drop_streams)))
        else:
            server.run(server.replace(self, drop_streams))
        return self

    # What subclasses provide: answering requests, and taking part in the server's life.

    def make_request(
        self,
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
        loop: asyncio.AbstractEventLoop,
    ) -> web.BaseRequest:
        """The request object :meth:`handle` receives."""
        return web.BaseRequest(message, payload, protocol, writer, task, loop)

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Answer one request. For a :class:`PlainRequest` (when :attr:`answers_plain`), a
        response that is not aiohttp's ``StreamResponse`` says the connector has written it
        on the connection itself; its ``status`` and ``keep_alive`` are read."""
        raise NotImplementedError

    async def startup(self) -> None:
        """Prepare to answer; runs on the server's loop before the first request."""

    def close_streams(self) -> None:
        """Cut the requests still running on this connector (``drop_streams``)."""
        for task in list(self._inflight):
            task.cancel()

    async def shutdown(self) -> None:
        """The server is stopping: end long-running responses; open requests are awaited
        next, for the connector's ``shutdown_grace`` seconds, then cancelled."""

    async def cleanup(self) -> None:
        """Release what :meth:`startup` acquired; no request of this connector is running."""

    def __repr__(self) -> str:
        state = "running" if self.current else "taken over" if self.running else "stopped"
        return f"<{type(self).__name__} {self.url} {state}>"


class Server:
    """The listening sockets and aiohttp's runner, shared by successive connectors."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sockets: list[socket.socket],
        target: Connector,
        requested_port: int,
        *,
        owns_loop: bool,
    ) -> None:
        self.loop = loop
        self.sockets = sockets
        self.host = target.host
        self.port: int = sockets[0].getsockname()[1]
        self.requested_port = requested_port
        self.target = target
        self.is_open = True
        self._owns_loop = owns_loop
        # Every connector with requests in flight, and the current one: those the server's
        # stop must reach. A replaced connector leaves it once its last request ends.
        self._connectors: list[Connector] = [target]
        self._tasks: set[asyncio.Task[Any]] = set()
        self._runner: _Runner | None = None
        self._sites: list[_Site] = []
        self._listening = True
        self.errors = LogThrottle()
        self.access_log = AccessLog(_access_logger)
        self.outbox = Outbox(loop)
        """The plain responses of the loop's current turn (see :class:`Outbox`)."""
        _open[(self.host, self.port)] = self

    # The request path: the target is read once per request, when aiohttp makes the request
    # object, so that a swap never splits one request between two connectors.

    def _make_request(
        self,
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        target = self.target
        request = target.make_request(message, payload, protocol, writer, task, self.loop)
        request[_TARGET] = target
        return request

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        target: Connector = request[_TARGET]
        task = self._begin(target)
        try:
            return await target.handle(request)
        finally:
            self._end(target, task)

    def _plain_target(self) -> Connector | None:
        """The connector a plain request would go to now, if it answers plain ones."""
        target = self.target
        return target if target.answers_plain else None

    async def _answer_plain(self, target: Connector, request: PlainRequest) -> bool:
        """Answer a plain request of a :class:`Connection` as aiohttp's protocol answers
        its requests; whether the connection may serve another."""
        began = self.loop.time()
        task = self._begin(target)
        try:
            response = await target.handle(request)
            # A response that is not aiohttp's the connector wrote on the connection itself.
            if isinstance(response, web.StreamResponse):
                if not response.prepared:
                    await response.prepare(request.aiohttp_request(target.make_request))
                await response.write_eof()
        except ConnectionError:
            return False  # the client left
        except Exception:
            log.exception("GET %s: writing the response failed", request.rel_url)
            return False
        finally:
            self._end(target, task)
        self.access_log.add(target.access_log, request, response.status, self.loop.time() - began)
        return response.keep_alive is not False

    # While a connector answers a request, the request's task is in flight for it: stop
    # waits for it, and a replaced connector retires after its last one.

    def _begin(self, target: Connector) -> asyncio.Task[Any]:
        # Given the loop, current_task() skips get_running_loop() (a getpid() system call
        # on Python 3.11).
        task = asyncio.current_task(self.loop)
        assert task is not None
        target._inflight.add(task)
        return task

    def _end(self, target: Connector, task: asyncio.Task[Any]) -> None:
        target._inflight.discard(task)
        if not target._inflight and target is not self.target and self.is_open:
            self.track(self.loop.create_task(self._retire(target)))

    # Life cycle, on the server's loop.

    async def open(self) -> None:
        """Start the target, then accept connections on every socket."""
        await self.start_connector(self.target)
        limits = self.target.limits
        backlog, max_connections = capacity(limits.max_connections)
        web_server = GuardedServer(
            self._handle,
            max_connections=max_connections,
            header_timeout=limits.header_timeout,
            errors=self.errors,
            connection=self._connection,
            request_factory=self._make_request,
            # A client that leaves cancels its handler at once, so an idle event stream
            # notices the disconnect now rather than at its next write.
            handler_cancellation=True,
            keepalive_timeout=limits.keepalive_timeout,
            access_log_class=AiohttpAccessLogger,
            access_log=self.access_log,  # type: ignore[arg-type]
            loop=self.loop,
        )
        self._runner = runner = _Runner(web_server, self, shutdown_timeout=0)
        await runner.setup()
        log_accept_errors(self.loop)
        for sock in self.sockets:
            if not self._listening:  # stopped while opening
                return
            site = _Site(runner, sock, backlog=backlog)
            await site.start()
            self._sites.append(site)

    def _connection(self, manager: GuardedServer) -> Connection:
        return Connection(manager, self._plain_target, self._answer_plain, self.outbox, self.loop)

    def stop_listening(self) -> None:
        """Refuse new connections from now on; synchronous, for code on the loop's thread."""
        self._listening = False
        for site in self._sites:
            site.stop_listening()
        if not self._sites:  # not opened yet: the sockets are not the loop's yet
            self.close_sockets()

    async def replace(self, new: Connector, drop_streams: bool) -> None:
        """Start ``new``, then make it the target (see :meth:`attach`)."""
        await self.start_connector(new)
        self.attach(new, drop_streams)

    def attach(self, new: Connector, drop_streams: bool = False) -> None:
        """Make ``new`` the target now; the old one is cleaned up after its last request.

        ``new`` must have been started (:meth:`replace`) unless its ``startup`` is a no-op.
        """
        if new._phase == "new":
            new._phase = "started"
        old, self.target = self.target, new
        if new not in self._connectors:
            self._connectors.append(new)
        if old is new:
            return
        if drop_streams:
            old.close_streams()
        if not old._inflight:
            self.track(self.loop.create_task(self._retire(old)))

    async def close(self, grace: float) -> None:
        """Stop in aiohttp's order: stop accepting, close idle connections, tell every
        connector (which ends its streams), await open requests for up to ``grace`` seconds
        and cancel the rest, clean every connector up. Then :meth:`release_loop`. Python's
        cyclic garbage collector is paused meanwhile: its full collections would walk every
        object of every stream being closed."""
        if not self.is_open:
            return
        self.is_open = False
        _open.pop((self.host, self.port), None)
        try:
            with _collector_paused():
                if self._runner is not None:
                    self._runner.grace = grace
                    await self._runner.cleanup()
                else:
                    await self._cleanup_connectors()
        finally:
            self.access_log.flush()  # the loop may not turn again
            self.close_sockets()

    def abandon(self) -> None:
        """Forget a server whose loop has ended, closing its sockets."""
        self.is_open = False
        _open.pop((self.host, self.port), None)
        self.close_sockets()
        self.release_loop()

    def release_loop(self) -> None:
        """Let the background loop end if this was its last server (from another thread,
        wait for it to end)."""
        if self._owns_loop:
            self._owns_loop = False
            _background.release()

    # Helpers.

    def on_loop_thread(self) -> bool:
        """Whether the caller runs on this server's loop."""
        return _running_loop() is self.loop

    def run(self, coroutine: Awaitable[Any], timeout: float = SWAP_TIMEOUT) -> Any:
        """Run ``coroutine`` on the server's loop from another thread and wait for it."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)  # type: ignore[arg-type]
        return future.result(timeout=timeout)

    def track(self, task: asyncio.Task[Any]) -> None:
        """Keep a background task referenced until it ends (asyncio keeps weak ones), and
        log what it raised: nobody awaits it."""
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("%s", error, exc_info=None if isinstance(error, ReplkitError) else error)

    def close_sockets(self) -> None:
        """Close the listening sockets (closing twice is harmless)."""
        for sock in self.sockets:
            sock.close()

    async def start_connector(self, connector: Connector) -> None:
        """Run ``connector``'s startup, once, on this loop: before it may answer."""
        if connector._phase == "new":
            connector._phase = "started"
            await connector.startup()

    async def _retire(self, connector: Connector) -> None:
        if connector is self.target or connector._inflight:
            return
        if connector in self._connectors:
            self._connectors.remove(connector)
        await self._shut_down(connector)
        await self._clean_up(connector)

    async def _shut_down(self, connector: Connector) -> None:
        if connector._phase == "started":
            connector._phase = "shut down"
            await _logged(connector.shutdown, "shutdown", connector)

    async def _clean_up(self, connector: Connector) -> None:
        if connector._phase == "shut down":
            connector._phase = "cleaned up"
            await _logged(connector.cleanup, "cleanup", connector)

    async def _shutdown_connectors(self) -> None:
        for connector in list(self._connectors):
            await self._shut_down(connector)

    async def _cleanup_connectors(self) -> None:
        for connector in list(self._connectors):
            await self._shut_down(connector)
            await self._clean_up(connector)


class _Site(web.SockSite):
    """aiohttp's site for a socket bound beforehand, which can also stop listening from
    synchronous code (``BaseSite.stop`` is a coroutine)."""

    def stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()


class _Runner(web.ServerRunner):
    """aiohttp's runner, with the server's connectors told at the two points it provides:
    ``shutdown`` between closing idle connections and awaiting open requests, and
    ``_cleanup_server`` once they have ended."""

    def __init__(self, web_server: web.Server, owner: Server, **kwargs: Any) -> None:
        super().__init__(web_server, **kwargs)
        self.owner = owner

    @property
    def grace(self) -> float:
        return self._shutdown_timeout

    @grace.setter
    def grace(self, seconds: float) -> None:
        self._shutdown_timeout = seconds

    async def shutdown(self) -> None:
        loop = asyncio.get_running_loop()
        began = loop.time()
        await self.owner._shutdown_connectors()
        # The time connectors took to end their streams counts against the grace open
        # requests get next; never 0, which aiohttp takes as "no time limit".
        self.grace = max(self.grace - (loop.time() - began), 0.001)

    async def _cleanup_server(self) -> None:
        await self.owner._cleanup_connectors()


def _access_logger(request: web.BaseRequest) -> logging.Logger | None:
    """The access log of the connector that answered ``request``; :data:`ACCESS_LOG` for a
    request aiohttp answered without one (a malformed request head)."""
    target: Connector | None = request.get(_TARGET)
    return ACCESS_LOG if target is None else target.access_log


async def _logged(hook: Callable[[], Awaitable[None]], what: str, connector: Connector) -> None:
    try:
        await hook()
    except Exception:
        log.exception("%s of %r raised", what, connector)


SERVING_GC_THRESHOLD = 100_000
"""The young-generation threshold :func:`tune_collector` sets (Python's default is 700)."""


def tune_collector() -> None:
    """Set Python's cyclic garbage collector for a process whose work is serving, as
    ``replkit serve`` and its workers do (never a REPL's or a kernel's process, which is the
    user's): a young generation of :data:`SERVING_GC_THRESHOLD` objects instead of 700.

    Every open connection holds about sixty tracked objects (transport, protocol, request,
    tasks, frames, the stream's channel) for as long as it is open, and every collection of
    a generation walks every object in it. With the default threshold, a storm of thousands
    of clients connecting at once collects the young generation every dozen connections,
    the middle one every hundred, and runs full collections over every stream already open:
    about 0.4 s of a 5,000-client storm on two cores. With 10,000, about 0.17 s of it (most
    of it twenty collections of the middle generation); with 100,000, under 0.1 s: each
    new stream's objects are walked once, young, and the middle generation is collected
    once or twice a storm. What it costs: at most 100,000 unreachable objects (10 MB or so)
    waiting a little longer, and a young collection, when one comes, taking up to about
    20 ms instead of 1. Allocations that die young (a request's) never count towards it. A
    higher threshold is kept, a disabled collector left off, and an app that sets its own
    when imported (after this) has the last word."""
    young, *older = gc.get_threshold()
    if 0 < young < SERVING_GC_THRESHOLD:
        gc.set_threshold(SERVING_GC_THRESHOLD, *older)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off meanwhile, if it was on. Closing thousands of
    streams allocates enough to trigger full collections, each of which walks every object
    of every stream still open (about 25 us a stream, a quarter of a second with 10,000) and
    finds next to nothing: the streams' objects are freed as they close."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


_open: dict[tuple[str, int], Server] = {}


def open_servers() -> list[Server]:
    """The servers open in this process, oldest first."""
    return list(_open.values())


def find_server(host: str, port: int) -> Server | None:
    """The open server bound at ``host:port`` (a port of 0 matches none)."""
    server = _open.get((host, port))
    return server if server is not None and server.is_open else None


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


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
            # What still runs (a topic's reader, a stream's producer) ends as it would under
            # asyncio.run: cancelled, and awaited, before the loop closes.
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()


_background = _BackgroundLoop()


def bind(host: str, port: int) -> list[socket.socket]:
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
            sock.listen(BACKLOG)
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
