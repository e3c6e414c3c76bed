"""Server-sent events, after Pedestal's ``io.pedestal.http.sse``.

:func:`start_stream` turns a request context into an open ``text/event-stream`` response and,
once the stream is established, hands ``stream_ready`` an :class:`EventChannel`. Producers
put events on the channel from any thread (``put``) or coroutine (``send``); closing the
channel ends the response after what is buffered has been sent.

The interceptors run for the request that opens the stream, never for the events.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import logging
import re
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from replkit.interceptor import Context, name_of

__all__ = ["EventChannel", "EventStream", "encode_event", "start_stream"]

log = logging.getLogger("replkit.sse")

StreamReady = Callable[["EventChannel", Context], Any]
"""``stream_ready(event_channel, context)``, plain or ``async def``."""

HEADERS = {
    "Content-Type": "text/event-stream; charset=UTF-8",
    "Cache-Control": "no-cache",
    # Stops nginx and friends from buffering the stream into silence.
    "X-Accel-Buffering": "no",
}
HEARTBEAT = b":\n\n"
EVENT_KEYS = frozenset({"name", "data", "id", "retry"})
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_FORBIDDEN = re.compile(r"[\r\n\0]")


def encode_event(event: Any) -> bytes:
    """Encode one event in the ``text/event-stream`` format, LF line ends.

    An event is a mapping with ``data`` and optional ``name``, ``id`` and ``retry``; any
    other value is sent as data. Values go through ``str()`` (bytes are decoded as UTF-8,
    ``None`` is empty); multi-line data becomes several ``data:`` lines. Raises
    :class:`ValueError` for a name or id containing CR, LF or NUL, a ``retry`` that is not
    a non-negative integer, or a mapping with other keys.
    """
    if isinstance(event, Mapping):
        unknown = set(event) - EVENT_KEYS
        if unknown:
            raise ValueError(
                f"event has unknown keys {sorted(map(str, unknown))}; an event is a dict "
                "with 'data' and optional 'name', 'id', 'retry' (send other values as data)"
            )
        fields = event
    else:
        fields = {"data": event}
    out = []
    for key, field in (("name", "event"), ("id", "id")):
        value = _text(fields.get(key))
        if _FORBIDDEN.search(value):
            raise ValueError(f"event {key} {value!r} contains CR, LF or NUL, which SSE forbids")
        if value:
            out.append(f"{field}: {value}\n")
    retry = fields.get("retry")
    if retry is not None:
        if isinstance(retry, bool) or not isinstance(retry, int) or retry < 0:
            raise ValueError(f"event retry {retry!r} must be a non-negative int (milliseconds)")
        out.append(f"retry: {retry}\n")
    out.extend(f"data: {line}\n" for line in _LINE_BREAK.split(_text(fields.get("data"))))
    out.append("\n")
    return "".join(out).encode()


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode()
    return str(value)


class EventChannel:
    """A bounded channel of events from producers to one open event stream.

    ``put`` blocks the calling thread while the buffer is full (Clojure's ``>!!``); ``send``
    is its awaitable twin (``>!``). Both return ``False`` once the channel is closed, by
    the producer, by the client leaving, or by the server stopping. Events are validated
    and encoded when they are put, so a bad event raises in the producer, not in the server.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, buffer: int = 10) -> None:
        if isinstance(buffer, bool) or not isinstance(buffer, int) or buffer < 1:
            raise ValueError(f"buffer must be a positive int, got {buffer!r}")
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._buffer = buffer
        # Loop-thread state: only touched on the loop, so it needs no lock.
        self._items: deque[bytes] = deque()
        self._taker: asyncio.Future[None] | None = None
        self._putters: deque[asyncio.Future[None]] = deque()
        self._closed = False
        # Set from any thread the moment close() is called, so producers stop at once.
        self._closing = threading.Event()

    @property
    def closed(self) -> bool:
        """Whether the channel has been closed; puts then return ``False``."""
        return self._closing.is_set()

    def put(self, event: Any) -> bool:
        """Put ``event``, blocking while the buffer is full; ``False`` if closed.

        Safe from any thread. On the event loop's own thread it never blocks: with a full
        buffer it raises :class:`RuntimeError` (use ``await send(event)`` there instead).
        """
        data = encode_event(event)
        if self.closed:
            return False
        if threading.get_ident() == self._loop_thread:
            if not self._closed and len(self._items) < self._buffer and not self._putters:
                self._append(data)
                return True
            if self._closed:
                return False
            raise RuntimeError(
                "EventChannel.put() on the event loop's thread with a full buffer would "
                "block the server; use `await channel.send(event)` in async code"
            )
        try:
            future = asyncio.run_coroutine_threadsafe(self._offer(data), self._loop)
        except RuntimeError:  # the loop is closed: the stream is long gone
            return False
        while True:
            try:
                return future.result(timeout=0.25)
            except concurrent.futures.TimeoutError:
                # A stopped loop will never run the offer: give up rather than hang.
                if not self._loop.is_running():
                    future.cancel()
                    return False
            except concurrent.futures.CancelledError:
                return False

    async def send(self, event: Any) -> bool:
        """Send ``event``, waiting while the buffer is full; ``False`` if closed."""
        data = encode_event(event)
        if asyncio.get_running_loop() is self._loop:
            return await self._offer(data)
        return await asyncio.wrap_future(
            asyncio.run_coroutine_threadsafe(self._offer(data), self._loop)
        )

    def close(self) -> None:
        """Close the channel: buffered events are still sent, then the stream ends."""
        if self._closing.is_set():
            return
        self._closing.set()
        if threading.get_ident() == self._loop_thread:
            self._close_on_loop()
        else:
            # A closed loop means nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._close_on_loop)

    async def take(self, timeout: float | None) -> bytes | None:
        """Next encoded event; :data:`HEARTBEAT` after ``timeout`` idle seconds; ``None`` at end."""
        if not self._items and not self._closed:
            self._taker = self._loop.create_future()
            try:
                await asyncio.wait_for(self._taker, timeout)
            except TimeoutError:
                return HEARTBEAT
            finally:
                self._taker = None
        if not self._items:
            return None
        data = self._items.popleft()
        if self._putters:
            _wake(self._putters.popleft())
        return data

    async def _offer(self, data: bytes) -> bool:
        while not self._closed and (len(self._items) >= self._buffer):
            waiter = self._loop.create_future()
            self._putters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._putters:
                    self._putters.remove(waiter)
        if self._closed:
            return False
        self._append(data)
        return True

    def _append(self, data: bytes) -> None:
        self._items.append(data)
        if self._taker is not None:
            _wake(self._taker)

    def _close_on_loop(self) -> None:
        self._closed = True
        if self._taker is not None:
            _wake(self._taker)
        while self._putters:
            _wake(self._putters.popleft())

    def _discard(self) -> None:
        self._items.clear()
        self.close()


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class EventStream:
    """The body of an event-stream response: an async iterator of encoded events.

    The server iterates it after sending the headers. The first step calls ``stream_ready``;
    then each step yields the next event, or a heartbeat comment after ``heartbeat_delay``
    idle seconds, until the channel is closed and drained.
    """

    def __init__(
        self,
        stream_ready: StreamReady,
        context: Context,
        *,
        heartbeat_delay: float | None,
        buffer: int,
        on_client_disconnect: Callable[[Context], Any] | None,
    ) -> None:
        self.stream_ready = stream_ready
        self.context = context
        self.heartbeat_delay = heartbeat_delay
        self.buffer = buffer
        self.on_client_disconnect = on_client_disconnect
        self.channel: EventChannel | None = None

    def close(self) -> None:
        """End the stream after what is buffered (the server calls this when it stops)."""
        if self.channel is not None:
            self.channel.close()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._events()

    async def _events(self) -> AsyncIterator[bytes]:
        channel = self.channel = EventChannel(asyncio.get_running_loop(), self.buffer)
        producer: asyncio.Future[Any] | None = None
        ended = False
        try:
            producer = self._call_stream_ready(channel)
            while (data := await channel.take(self.heartbeat_delay)) is not None:
                yield data
            ended = True
        finally:
            channel._discard()
            if producer is not None and not producer.done():
                producer.cancel()
            if not ended and self.on_client_disconnect is not None:
                self._notify_disconnect()

    def _call_stream_ready(self, channel: EventChannel) -> asyncio.Future[Any] | None:
        name = name_of(self.stream_ready)
        try:
            result = self.stream_ready(channel, self.context)
        except Exception:
            log.exception("stream_ready %s raised; closing the stream", name)
            channel.close()
            return None
        if not inspect.isawaitable(result):
            return None
        producer = asyncio.ensure_future(result)

        def done(task: asyncio.Future[Any]) -> None:
            if not task.cancelled() and task.exception() is not None:
                log.error(
                    "stream_ready %s raised; closing the stream",
                    name,
                    exc_info=task.exception(),
                )
                channel.close()

        producer.add_done_callback(done)
        return producer

    def _notify_disconnect(self) -> None:
        assert self.on_client_disconnect is not None
        try:
            self.on_client_disconnect(self.context)
        except Exception:
            log.exception("on_client_disconnect %s raised", name_of(self.on_client_disconnect))


def start_stream(
    stream_ready: StreamReady,
    context: Context,
    heartbeat_delay: float | None = 15,
    buffer: int = 10,
    *,
    on_client_disconnect: Callable[[Context], Any] | None = None,
) -> Context:
    """Return ``context`` with an open event-stream response.

    Once the response headers are on the wire, ``stream_ready(event_channel, context)`` is
    called; it should set producers in motion and return (a thread, a task, or itself be
    ``async def``). The stream stays open until the channel is closed or the client leaves,
    which calls ``on_client_disconnect(context)``. A heartbeat comment goes out after
    ``heartbeat_delay`` seconds without an event (``None``: never). ``buffer`` bounds the
    events waiting between producers and the socket.
    """
    if isinstance(buffer, bool) or not isinstance(buffer, int) or buffer < 1:
        raise ValueError(f"buffer must be a positive int, got {buffer!r}")
    if heartbeat_delay is not None and heartbeat_delay <= 0:
        raise ValueError(f"heartbeat_delay must be positive or None, got {heartbeat_delay!r}")
    body = EventStream(
        stream_ready,
        context,
        heartbeat_delay=heartbeat_delay,
        buffer=buffer,
        on_client_disconnect=on_client_disconnect,
    )
    return {**context, "response": {"status": 200, "headers": dict(HEADERS), "body": body}}
