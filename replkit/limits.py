"""What a server allows its clients, and how it holds out against the ones that abuse it.

:class:`Limits` are a connector map's ``max_connections``, ``header_timeout`` and
``keepalive_timeout``. :class:`GuardedServer` is aiohttp's low-level server with them
enforced: past the connection cap the oldest idle connections are closed to make room, a
request head must arrive within the header timeout (slowloris), and the cap and listen
backlog fit the process's file descriptor limit (:func:`capacity`). Error logs are
rate-limited (:class:`LogThrottle`), so a flood of bad requests or failed ``accept()``
calls (:func:`log_accept_errors`) writes a line a second, not a traceback per attempt.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import resource
import struct
import termios
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler, RequestPayloadError

from replkit.errors import ReplkitError

__all__ = [
    "BACKLOG",
    "GuardedServer",
    "Limits",
    "LogThrottle",
    "capacity",
    "log_accept_errors",
    "log_slow_head",
    "unread_bytes",
]

log = logging.getLogger("replkit.server")

FD_RESERVE = 64
"""File descriptors the connection cap leaves for everything else: files being sent, the
event loop's own, the watcher's."""


BACKLOG = 4096
"""Connections the kernel queues before the server accepts them (capped by somaxconn, and
lowered to fit a small file descriptor limit)."""


@dataclass(frozen=True)
class Limits:
    """What a server allows its clients, fixed when it starts listening (a restart on the same
    socket keeps them).

    ``max_connections``: open connections; past it the oldest idle ones (waiting for a
    request, or between requests) are closed to make room, and with none idle a new one is.
    It is lowered to fit the process's file descriptor limit. ``header_timeout``: seconds a
    client has to send a whole request head once it starts one (slowloris), and the longest
    pause while a body is read. ``keepalive_timeout``: seconds a connection may sit idle,
    before its first request or between two.
    """

    max_connections: int = 10_000
    header_timeout: float = 10.0
    keepalive_timeout: float = 15.0

    def __post_init__(self) -> None:
        for name in ("max_connections", "header_timeout", "keepalive_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ReplkitError(f"{name} must be a positive number, got {value!r}")


class LogThrottle:
    """Logs each kind of message at most once per ``interval`` seconds: the first one at
    once, then, if more came meanwhile, one summary line with their count when the interval
    is over (on the running event loop). Remembers at most ``kinds`` kinds, so that a
    client cannot grow it."""

    def __init__(self, interval: float = 1.0, kinds: int = 256) -> None:
        self.interval = interval
        self.kinds = kinds
        self._since: dict[Hashable, float] = {}
        self._dropped: Counter[Hashable] = Counter()

    def log(
        self,
        logger: logging.Logger,
        level: int,
        kind: Hashable,
        message: str,
        *args: Any,
        exc_info: BaseException | None = None,
    ) -> None:
        """Log ``message % args`` unless a message of this ``kind`` went out lately."""
        now = time.monotonic()
        since = self._since.get(kind)
        if since is not None and now - since < self.interval:
            self._dropped[kind] += 1
            if self._dropped[kind] == 1:
                self._summarize_later(
                    since + self.interval - now, logger, level, kind, message, args
                )
            return
        if len(self._since) >= self.kinds:
            self._since.clear()
            self._dropped.clear()
        self._since[kind] = now
        logger.log(level, message, *args, exc_info=exc_info)

    def _summarize_later(self, delay: float, *summary: Any) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop to wait on: the count is lost, the next line still throttled
        loop.call_later(delay, self._summarize, *summary)

    def _summarize(
        self, logger: logging.Logger, level: int, kind: Hashable, message: str, args: Any
    ) -> None:
        dropped = self._dropped.pop(kind, 0)
        if dropped:
            self._since[kind] = time.monotonic()
            more = f" (and {dropped} more like this in {self.interval:g} s)"
            logger.log(level, message + more, *args)


def capacity(max_connections: int) -> tuple[int, int]:
    """The listen backlog and connection cap that fit the file descriptor limit.

    asyncio accepts up to a backlog's worth of connections per loop iteration, before the
    cap can close any, and may do so twice before the closes land: so the budget is the
    cap plus two backlogs plus :data:`FD_RESERVE`.
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return BACKLOG, max_connections
    spare = max(soft - FD_RESERVE, 3)
    backlog = min(BACKLOG, spare // 3)
    return backlog, max(1, min(max_connections, spare - 2 * backlog))


class GuardedServer(web.Server):
    """aiohttp's low-level server with a cap on open connections: past it, the oldest idle
    connections are closed to make room (as nginx reuses keep-alive connections), so a
    client holding thousands of idle sockets cannot lock others out; with none idle, the
    newcomer is closed. ``connection`` makes the protocol of each new connection (replkit's
    :class:`~replkit.connection.Connection`); without it, aiohttp's serves them."""

    def __init__(
        self,
        handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
        *,
        max_connections: int,
        header_timeout: float,
        keepalive_timeout: float,
        errors: LogThrottle,
        connection: Callable[[GuardedServer], asyncio.Protocol] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, keepalive_timeout=keepalive_timeout, **kwargs)
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.keepalive_timeout = keepalive_timeout
        self.errors = errors
        self._connection = connection
        # The open connections, oldest first; aiohttp's own list keeps closed ones until
        # their handler task ends.
        self._live: dict[Any, None] = {}

    def __call__(self) -> Any:
        """The protocol of a new connection: ``connection``'s if given, else aiohttp's."""
        if self._connection is not None:
            return self._connection(self)
        return self.aiohttp_protocol()

    def aiohttp_protocol(self) -> RequestHandler:
        """aiohttp's protocol for a connection, with this server's limits."""
        return _Protocol(self, loop=self._loop, **self._kwargs)

    def forget(self, connection: Any) -> None:
        """Drop ``connection`` from the open ones without closing it: another protocol,
        which registers itself, serves it from now on."""
        self._live.pop(connection, None)
        self._connections.pop(connection, None)

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        self._live[handler] = None
        excess = len(self._live) - self.max_connections
        if excess <= 0:
            return
        idle = []
        for other in self._live:  # oldest first
            if other is not handler and other.idle():
                idle.append(other)
                if len(idle) == excess:
                    break
        for other in idle:
            del self._live[other]
            other.force_close()
        if len(idle) < excess:
            self.errors.log(
                log,
                logging.WARNING,
                "cap",
                "%d connections open, every one busy: closing new connections",
                self.max_connections,
            )
            del self._live[handler]
            handler.force_close()

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        self._live.pop(handler, None)
        super().connection_lost(handler, exc)


def unread_bytes(transport: asyncio.BaseTransport | None) -> int:
    """How many bytes the client sent that the socket holds unread."""
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        return 0
    try:
        pending = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
    except OSError:
        return 0
    return int(struct.unpack("i", pending)[0])


class _Protocol(RequestHandler):
    """aiohttp's HTTP protocol with a header-read timeout and rate-limited error logs."""

    # As aiohttp's: an open connection holds no attribute dict.
    __slots__ = ("_errors", "_header_timeout", "_header_timer")

    def __init__(self, manager: GuardedServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = manager.header_timeout
        self._errors = manager.errors
        self._header_timer: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        # The first bytes of a request head that stays incomplete start the clock; a complete
        # head stops it. A head that arrives whole, as almost all do, costs no timer.
        idle = not self._request_in_progress and not self._messages
        super().data_received(data)
        if self._messages or self._request_in_progress:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None
        elif idle and data and self._header_timer is None:
            self._header_timer = self._loop.call_later(self._header_timeout, self._head_overdue)

    def head_due(self, when: float) -> None:
        """Close unless the head being read is complete by loop time ``when``: the deadline
        a connection handed over with part of a head had already started."""
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = self._loop.call_at(when, self._head_overdue)

    def idle(self) -> bool:
        """Waiting for a request (or the rest of its head), as aiohttp's own keep-alive
        timeout checks before closing a connection, or so new that none came yet; and with
        nothing unread in its socket: a client whose request the loop has not read yet is
        not idle."""
        waiting = self._waiter is not None and not self._waiter.done()
        new = self._request_count == 0 and not self._request_in_progress
        return (waiting or new) and not unread_bytes(self.transport)

    def _head_overdue(self) -> None:
        self._header_timer = None
        waiting = self._waiter is not None and not self._waiter.done()
        if waiting and not self._messages and self.transport is not None:
            log_slow_head(self._manager, self.peername)
            self.force_close()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().connection_lost(exc)

    def log_exception(self, *args: Any, **kwargs: Any) -> None:
        """aiohttp's report of a bad request or a failure: one line for a client's mistake,
        a traceback for anything else; either at most once a second per kind."""
        exc = kwargs.get("exc_info")
        if isinstance(exc, HttpProcessingError | RequestPayloadError):
            reason = " ".join(str(getattr(exc, "message", None) or exc).split())
            # One kind per exception type: the reason quotes what the client sent.
            self._errors.log(
                log,
                logging.INFO,
                type(exc),
                "bad request from %s: %s",
                _peer(self.peername),
                reason,
            )
        else:
            kind = (args[0] if args else "", type(exc))
            self._errors.log(log, logging.ERROR, kind, *args, exc_info=exc)


def log_slow_head(server: GuardedServer | None, peer: Any) -> None:
    """Log, at most once a second, that a connection from ``peer`` was closed for sending
    no complete request head within the server's ``header_timeout``."""
    if server is not None:
        server.errors.log(
            log,
            logging.INFO,
            "slow",
            "closed a connection from %s: no complete request head within %g s",
            _peer(peer),
            server.header_timeout,
        )


def _peer(peer: Any) -> str:
    return str(peer[0]) if isinstance(peer, tuple) else str(peer)


def log_accept_errors(loop: asyncio.AbstractEventLoop) -> None:
    """Log ``loop``'s failed ``accept()`` calls a line a second (installed once)."""
    current = loop.get_exception_handler()
    if not isinstance(current, _AcceptErrors):
        loop.set_exception_handler(_AcceptErrors(current))


class _AcceptErrors:
    """A loop exception handler that logs failed ``accept()`` calls (out of file
    descriptors, ...) one line a second instead of a traceback per attempt, and passes
    everything else to the handler it replaced."""

    def __init__(self, previous: Callable[..., Any] | None) -> None:
        self.previous = previous
        self.throttle = LogThrottle()

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if str(context.get("message", "")).startswith("socket.accept()"):
            error = context.get("exception")
            self.throttle.log(
                log, logging.ERROR, type(error), "cannot accept connections: %s", error
            )
        elif self.previous is not None:
            self.previous(loop, context)
        else:
            loop.default_exception_handler(context)
