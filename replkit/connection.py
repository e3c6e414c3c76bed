"""One client connection of replkit's server, answered without aiohttp's request objects
when its requests are plain.

Each connection starts as a :class:`Connection`. A request head that is *plain* (``GET``,
HTTP/1.1, no body, nothing to negotiate, every line in the strict form below) for a
connector that answers plain requests is answered here: a :class:`PlainRequest` made from
the head goes to the connector, and its response is written on the transport. Anything
else (a body, ``HEAD``, HTTP/1.0, an upgrade, a head this strict reading does not take, an
aiohttp application serving) hands the connection, with that request's bytes and all that
follow, to aiohttp's protocol, which serves it from then on as it serves every connection
of an aiohttp server: its parser, its limits and its error responses decide every request
that is not plain.

Why: aiohttp's protocol parses every head into a message, a header multidict and a URL,
and keeps them, with a parser and a queue, for as long as a connection is open. A plain
request needs none of that: an idle event stream then holds about 9 KiB instead of 13.
And a complete response to a plain request goes out with the others of its turn of the
event loop (:class:`Outbox`), rather than between two answers: the server's own share of
a ``GET`` is then well under what a bare aiohttp handler costs.

The connection plays the part of aiohttp's ``RequestHandler`` for the server that owns it
(:class:`~replkit.limits.GuardedServer`, whose connection cap and shutdown reach every
connection): ``close``, ``force_close``, ``shutdown``, ``idle`` and ``_task_handler``.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http import HttpVersion11, RawRequestMessage, StreamWriter
from aiohttp.streams import EMPTY_PAYLOAD
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from replkit import limits

if TYPE_CHECKING:
    from replkit.server import Connector

__all__ = ["Connection", "Outbox", "PlainRequest", "plain_head"]

log = logging.getLogger("replkit.server")

MAX_HEAD = 8190
"""The longest head taken as plain, in bytes (aiohttp's limit for one line): a longer one
goes to aiohttp, which decides whether it is too long."""

SEND_LATER_MAX = 64 * 1024
"""The largest complete response sent with the others of its turn of the loop (see
:class:`Outbox`): one the size of asyncio's default write buffer. A larger one is written
at once, and the request waits for the client to take it, as aiohttp's do."""

MAX_FIELDS = 100
"""The most header lines a plain head has (aiohttp's limit is 128): a head with more goes
to aiohttp, which decides whether they are too many."""

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
# GET, an origin-form target of unreserved, reserved and percent characters, HTTP/1.1.
_REQUEST_LINE = re.compile(rb"GET (/[A-Za-z0-9\-._~!$&'()*+,;=:@/%?]*) HTTP/1\.1\r\n")
# A header line: a token, a colon, and a value of visible ASCII with inner spaces or tabs.
_FIELD = re.compile(rb"(" + _TOKEN + rb"):[\t ]*((?:[!-~]+(?:[\t ]+[!-~]+)*)?)[\t ]*\r\n")
# Headers that make a request something other than plain: a body, an upgrade, a wait.
_NOT_PLAIN = frozenset(["transfer-encoding", "expect", "upgrade", "http2-settings"])


def plain_head(head: bytes) -> tuple[str, dict[str, str]] | None:
    """The target and the headers (lower-case names) of ``head``, a request head ending in
    an empty line, if it is plain; ``None`` if aiohttp is to read it."""
    line = _REQUEST_LINE.match(head)
    if line is None:
        return None
    headers: dict[str, str] = {}
    at, end = line.end(), len(head) - 2
    while at < end:
        field = _FIELD.match(head, at)
        if field is None:
            return None
        name = field[1].decode("ascii").lower()
        if name in headers or len(headers) == MAX_FIELDS:  # aiohttp knows which may repeat
            return None
        headers[name] = field[2].decode("ascii")
        at = field.end()
    if not _NOT_PLAIN.isdisjoint(headers) or headers.get("content-length", "0") != "0":
        return None
    connection = headers.get("connection")
    if "host" not in headers or (connection is not None and "upgrade" in _tokens(connection)):
        return None
    return line[1].decode("ascii"), headers


def _tokens(value: str | None) -> set[str]:
    """The tokens of a comma-separated header value, lower case."""
    return {token.strip().lower() for token in value.split(",")} if value else set()


class _Target:
    """The request target, as much of yarl's ``URL`` as replkit reads of a request's."""

    __slots__ = ("raw_path", "raw_path_qs", "raw_query_string")

    def __init__(self, target: str) -> None:
        self.raw_path_qs = target
        self.raw_path, _, self.raw_query_string = target.partition("?")

    def __str__(self) -> str:
        return self.raw_path_qs


class Outbox:
    """The complete responses of one turn of the event loop, sent together at its end.

    Why: answering a request is Python code; sending its response is a system call that
    runs the kernel's TCP stack, on the same core. One after the other, request by request,
    each send evicts the interpreter's working set from the CPU's caches, and the next
    answer starts cold. With a turn's sends after its answers, a server under load answers
    ``GET /`` 30-40% faster (the router alone: 21k requests a second, 29k; with the default
    interceptors and the access log: 12k, 17k; ``wrk`` on two cores). A response waits at
    most for the answers of the requests read in the same turn.

    Order: a connection answers one request at a time, and its next starts from the done
    callback of the task that answered the last; :meth:`flush` was scheduled before that
    callback (asyncio runs callbacks in the order they were scheduled), so a connection's
    responses leave in order, and before anything it writes itself afterwards.
    """

    __slots__ = ("_loop", "_pending")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._pending: list[tuple[asyncio.Transport, bytes]] = []

    def send(self, transport: asyncio.Transport, data: bytes) -> None:
        """Write ``data`` on ``transport`` at the end of this turn of the loop."""
        pending = self._pending
        pending.append((transport, data))
        if len(pending) == 1:
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write what is pending now; a connection closed meanwhile gets nothing."""
        pending, self._pending = self._pending, []
        for transport, data in pending:
            if not transport.is_closing():
                transport.write(data)


class PlainRequest:
    """A plain request, as much of aiohttp's ``BaseRequest`` as replkit's connector reads;
    :meth:`aiohttp_request` makes the real one when a response of aiohttp's needs it."""

    __slots__ = (
        "_connection",
        "_head",
        "_writer",
        "headers",
        "keep_alive",
        "rel_url",
        "remote",
        "sockname",
    )

    method = "GET"
    version = HttpVersion11
    scheme = "http"
    content = EMPTY_PAYLOAD
    content_length = None

    def __init__(
        self, connection: Connection, head: bytes, target: str, headers: dict[str, str]
    ) -> None:
        self._connection = connection
        self._head = head
        self.headers = headers
        self.rel_url = _Target(target)
        tokens = headers.get("connection")
        self.keep_alive = tokens is None or "close" not in _tokens(tokens)
        self.remote: str | None = connection.remote
        """The client's address."""
        self.sockname: Any = connection.sockname
        """The server's address of the connection."""
        self._writer: StreamWriter | None = None

    @property
    def writer(self) -> StreamWriter:
        """aiohttp's writer on the connection, for a response written as it goes."""
        if self._writer is None:
            self._writer = StreamWriter(self._connection, self._connection._loop)
        return self._writer

    def send(self, data: bytes) -> None:
        """Send ``data``, a complete response, with the others of this turn of the loop
        (see :class:`Outbox`); nothing if the connection is closed."""
        connection = self._connection
        if connection.transport is not None:
            connection._outbox.send(connection.transport, data)

    @property
    def transport(self) -> asyncio.Transport | None:
        """The connection's transport; ``None`` once it is closed."""
        return self._connection.transport

    def aiohttp_request(self, make: Callable[..., web.BaseRequest]) -> web.BaseRequest:
        """This request as aiohttp's, made by ``make`` (a connector's ``make_request``)."""
        raw = tuple(_FIELD.findall(self._head, self._head.index(b"\r\n") + 2))
        headers = CIMultiDictProxy(CIMultiDict((n.decode(), v.decode()) for n, v in raw))
        path = self.rel_url.raw_path_qs
        url = URL.build(
            path=self.rel_url.raw_path, query_string=self.rel_url.raw_query_string, encoded=True
        )
        message = RawRequestMessage(
            "GET", path, HttpVersion11, headers, raw, not self.keep_alive, None, False, False, url
        )
        task = asyncio.current_task()
        assert task is not None
        connection = self._connection
        return make(message, EMPTY_PAYLOAD, connection, self.writer, task, connection._loop)


class Connection(BaseProtocol):
    """A client connection: plain requests answered here, one at a time, in order; the
    connection handed to aiohttp's protocol at the first request that is not plain.

    ``target`` is the connector that would answer a request now, or ``None`` when it does
    not answer plain requests; ``answer`` answers one and says whether the connection may
    serve another (not after ``Connection: close``, or a response cut or failed)."""

    __slots__ = (
        "_answer",
        "_buffer",
        "_close",
        "_head_timer",
        "_idle_since",
        "_keepalive_timer",
        "_manager",
        "_outbox",
        "_target",
        "_task",
        "peername",
        "remote",
        "sockname",
    )

    def __init__(
        self,
        manager: limits.GuardedServer,
        target: Callable[[], Connector | None],
        answer: Callable[[Connector, PlainRequest], Coroutine[Any, Any, bool]],
        outbox: Outbox,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        super().__init__(loop)
        self._outbox = outbox
        self._manager: limits.GuardedServer | None = manager
        self._target = target
        self._answer = answer
        self._buffer = bytearray()
        self._task: asyncio.Task[bool] | None = None
        self._close = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._keepalive_timer: asyncio.TimerHandle | None = None
        self._idle_since = 0.0
        self.peername: Any = None
        """The client's address, as the socket gives it."""
        self.remote: str | None = None
        """The client's host, as a request's ``remote`` says it."""
        self.sockname: Any = None
        """The server's address of this connection."""

    @property
    def ssl_context(self) -> None:
        """What aiohttp's request asks its protocol: replkit serves no TLS itself."""
        return None

    # What the server that owns connections uses (see the module's docstring).

    @property
    def _task_handler(self) -> asyncio.Task[bool] | None:
        # aiohttp's server keeps a closed connection until this ends.
        return self._task

    def idle(self) -> bool:
        """Waiting for a request, or for the rest of its head (as aiohttp's protocol counts
        it), with nothing unread in the socket (see ``limits``)."""
        return (
            self._task is None
            and b"\r\n\r\n" not in self._buffer
            and not limits.unread_bytes(self.transport)
        )

    def close(self) -> None:
        """Close once the request in progress, if any, is answered."""
        self._close = True
        if self._task is None and self.transport is not None:
            self.transport.close()

    def force_close(self) -> None:
        """Close now."""
        self._close = True
        if self.transport is not None:
            self.transport.close()

    async def shutdown(self, timeout: float | None = 15.0) -> None:
        """The server stops: let the request in progress finish for ``timeout`` seconds,
        then cancel it, and close."""
        self._close = True
        task = self._task
        if task is not None:
            await asyncio.wait([task], timeout=timeout)
            if not task.done():
                task.cancel()
                await asyncio.wait([task], timeout=timeout)
        self.force_close()

    # The transport's side.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        # Read once: every request of the connection reports them.
        self.peername = peer = transport.get_extra_info("peername")
        self.remote = str(peer[0]) if isinstance(peer, tuple) else peer
        self.sockname = transport.get_extra_info("sockname")
        if self._manager is not None:
            self._manager.connection_made(self, transport)  # type: ignore[arg-type]
        self._wait_for_request()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._task is None:
            self._next()
        self._hold_back()

    def _hold_back(self) -> None:
        """Read no more while a request is answered, or its response waits for the client
        to take what it was sent, and a head's worth of the next ones waits: a client
        pipelining requests it never reads the answers to fills its own socket, not this
        process's memory."""
        busy = self._task is not None or self._paused
        if busy and len(self._buffer) > MAX_HEAD:
            if not self._buffer_paused:
                self._pause_reading_for_buffer()
        elif self._buffer_paused:
            self._resume_reading_for_buffer()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_timers()
        if self._manager is not None:
            self._manager.connection_lost(self, exc)  # type: ignore[arg-type]
            self._manager = None
        if self._task is not None:
            self._task.cancel()  # the client left: its handler stops now
        super().connection_lost(exc)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._task is None and self._buffer:
            self._next()  # the next request waited for the client to take the last answer
        self._hold_back()

    # Requests.

    def _next(self) -> None:
        """Answer the next request in the buffer, if it is all there and the client has
        taken what it was sent (:meth:`resume_writing` calls back); none on a connection
        that is closing (a response cut, whose last bytes are still going out)."""
        transport = self.transport
        if transport is None or transport.is_closing() or self._close or self._paused:
            return
        buffer = self._buffer
        end = buffer.find(b"\r\n\r\n", 0, MAX_HEAD + 4)
        if end < 0:
            if len(buffer) > MAX_HEAD:
                self._hand_over()
            elif buffer and self._head_timer is None and self._manager is not None:
                self._cancel_timers()
                timeout = self._manager.header_timeout
                self._head_timer = self._loop.call_later(timeout, self._head_overdue)
            return
        head = bytes(buffer[: end + 4])
        plain = plain_head(head)
        target = self._target() if plain is not None else None
        if plain is None or target is None:
            self._hand_over()
            return
        del buffer[: end + 4]
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        request = PlainRequest(self, head, *plain)
        if not request.keep_alive:
            self._close = True
        self._task = self._loop.create_task(self._answer(target, request))
        self._task.add_done_callback(self._served)

    def _served(self, task: asyncio.Task[bool]) -> None:
        self._task = None
        if task.cancelled():
            self._close = True
        elif (error := task.exception()) is not None:
            log.error("answering a request raised", exc_info=error)
            self._close = True
        elif not task.result():  # the connection may not serve another
            self._close = True
        if self.transport is None:
            return
        if self._close:
            self.transport.close()
            return
        if self._buffer:
            self._next()
        else:
            self._wait_for_request()
        self._hold_back()

    def _hand_over(self) -> None:
        """Let aiohttp's protocol serve this connection from the buffer on."""
        manager, transport = self._manager, self.transport
        if manager is None or transport is None:
            return  # closing
        head_due = self._head_timer.when() if self._head_timer is not None else None
        self._cancel_timers()
        # Unregistered, not lost: the connection lives on as aiohttp's.
        manager.forget(self)
        self._manager = None
        protocol = manager.aiohttp_protocol()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        data, self._buffer = bytes(self._buffer), bytearray()
        if self._buffer_paused:
            self._resume_reading_for_buffer()
        self.transport = None
        protocol.data_received(data)
        if head_due is not None:
            protocol.head_due(head_due)

    # Timers.

    def _wait_for_request(self) -> None:
        # One keep-alive timer a connection, moved on when it fires rather than made anew
        # for every request: a busy connection costs a timer every keepalive_timeout.
        self._idle_since = self._loop.time()
        if self._keepalive_timer is None and self._manager is not None:
            timeout = self._manager.keepalive_timeout
            if timeout > 0:
                due = self._idle_since + timeout
                self._keepalive_timer = self._loop.call_at(due, self._keepalive_over)

    def _keepalive_over(self) -> None:
        self._keepalive_timer = None
        if self._task is not None or self._head_timer is not None or self._manager is None:
            return  # answering (it sets the timer again), or a head's deadline runs
        due = self._idle_since + self._manager.keepalive_timeout
        if self._loop.time() < due:
            self._keepalive_timer = self._loop.call_at(due, self._keepalive_over)
        elif self.idle():
            self.force_close()

    def _head_overdue(self) -> None:
        self._head_timer = None
        if self._task is None and self.transport is not None:
            limits.log_slow_head(self._manager, self.peername)
            self.force_close()

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._keepalive_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._keepalive_timer = None
