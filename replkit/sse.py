"""Server-sent events, after Pedestal's ``io.pedestal.http.sse``.

:func:`start_stream` turns a request context into an open ``text/event-stream`` response and,
once the stream is established, hands ``stream_ready`` an :class:`EventChannel`. Producers
put events on the channel from any thread (``put``, ``offer``) or coroutine (``send``);
closing the channel ends the response after what is buffered has been sent.

Many clients fed the same events, with replay on reconnect, are a :class:`Topic`
(``replkit.topic``, also spelled ``replkit.sse.Topic``) served by :func:`topic_stream`.

The interceptors run for the request that opens the stream, never for the events.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import logging
import re
import threading
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from enum import Enum
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from replkit.interceptor import Context, name_of

if TYPE_CHECKING:
    from replkit.topic import Topic, topic_stream

__all__ = [
    "EventChannel",
    "EventStream",
    "Topic",
    "encode_event",
    "last_event_id",
    "start_stream",
    "topic_stream",
]

log = logging.getLogger("replkit.sse")

StreamReady = Callable[["EventChannel", Context], Any]
"""``stream_ready(event_channel, context)``, plain (run on a thread) or ``async def``."""

HEADERS = {
    "Content-Type": "text/event-stream; charset=UTF-8",
    "Cache-Control": "no-cache",
    # Stops nginx and friends from buffering the stream into silence.
    "X-Accel-Buffering": "no",
}
HEARTBEAT = b":\n\n"
CHUNK_SIZE = 64 * 1024
"""Buffered events are joined into chunks of about this many bytes (at least one event)."""
EVENT_KEYS = frozenset({"name", "data", "id", "retry"})
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_FORBIDDEN = re.compile(r"[\r\n\0]")


def encode_event(event: Any) -> bytes:
    """Encode one event in the ``text/event-stream`` format, LF line ends, UTF-8.

    An event is a mapping with ``data`` and optional ``name``, ``id`` and ``retry``; any
    other value is sent as data. Data that is a dict or a list is sent as compact JSON
    (UTF-8, no ASCII escaping), so ``JSON.parse(event.data)`` reads it back; bytes are
    decoded as UTF-8; ``None`` is empty; anything else goes through ``str()``. Multi-line
    data becomes several ``data:`` lines, which a client joins with LF (so CR and CRLF come
    back as LF). A blank name or id is left out. Raises :class:`ValueError` for a name or id
    containing CR, LF or NUL, a ``retry`` that is not a non-negative int, data that JSON
    cannot encode, text UTF-8 cannot encode, or a mapping with other keys.
    """
    if isinstance(event, Mapping):
        if not EVENT_KEYS.issuperset(event):
            raise ValueError(
                f"event has unknown keys {sorted(map(str, set(event) - EVENT_KEYS))}; an event "
                "is a dict with 'data' and optional 'name', 'id', 'retry' (send other values "
                "as data)"
            )
        get = event.get
        name, ident, retry, data = get("name"), get("id"), get("retry"), get("data")
    else:
        name = ident = retry = None
        data = event
    head = ""  # most events have no name, id or retry: nothing to check for them
    if name is not None:
        head = _field("name", "event", name)
    if ident is not None:
        head += _field("id", "id", ident)
    if retry is not None:
        if isinstance(retry, bool) or not isinstance(retry, int) or retry < 0:
            raise ValueError(f"event retry {retry!r} must be a non-negative int (milliseconds)")
        head += f"retry: {retry}\n"
    text = _data_text(data)
    if "\n" in text or "\r" in text:
        lines = "".join(f"data: {line}\n" for line in _LINE_BREAK.split(text))
    else:
        lines = f"data: {text}\n"
    try:
        return f"{head}{lines}\n".encode()
    except UnicodeEncodeError as err:
        raise ValueError(f"event text cannot be sent as UTF-8: {err}") from None


def _field(key: str, field: str, value: Any) -> str:
    """The ``event:`` or ``id:`` line of an event, empty for a blank value."""
    text = _text(value)
    if _FORBIDDEN.search(text):
        raise ValueError(f"event {key} {text!r} contains CR, LF or NUL, which SSE forbids")
    return f"{field}: {text}\n" if text else ""


def _data_text(data: Any) -> str:
    if type(data) is str:
        return data
    if isinstance(data, dict | list):
        try:
            return json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise ValueError(f"event data {data!r:.60} is not JSON-serializable: {err}") from None
    return _text(data)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode()
    return str(value)


def last_event_id(context: Context) -> str | None:
    """The id a client resumes from: its ``Last-Event-ID`` header, else a ``lastEventId``
    query parameter (for a first connection, which cannot set the header), else ``None``."""
    request = context.get("request") or {}
    header = (request.get("headers") or {}).get("last-event-id")
    if header:
        return str(header)
    params = request.get("query_params")
    if params is None:
        params = parse_qs(request.get("query_string") or "")
    value = params.get("lastEventId")
    if isinstance(value, list):
        value = value[-1] if value else None
    return str(value) if value else None


def _wake(future: asyncio.Future[Any], value: Any = None) -> None:
    if not future.done():
        future.set_result(value)


class _Waker:
    """Resolves futures of one event loop from any thread, with one loop wake-up per batch.

    A thread handing events to thousands of streams (a topic's fan-out, thousands of
    producer threads) would otherwise write to the loop's self-pipe once per stream.
    """

    __slots__ = ("_lock", "_loop", "_pending")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._pending: list[tuple[asyncio.Future[Any], Any]] = []

    def wake(self, future: asyncio.Future[Any], value: Any = None) -> None:
        if _running_loop() is self._loop:
            _wake(future, value)
            return
        with self._lock:
            self._pending.append((future, value))
            if len(self._pending) > 1:
                return  # a wake-up is already on its way and will take this one too
        try:
            self._loop.call_soon_threadsafe(self._run)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            with self._lock:
                self._pending.clear()

    def _run(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        for future, value in pending:
            _wake(future, value)


_wakers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Waker] = weakref.WeakKeyDictionary()
_wakers_lock = threading.Lock()


def _waker_of(loop: asyncio.AbstractEventLoop) -> _Waker:
    with _wakers_lock:
        waker = _wakers.get(loop)
        if waker is None:
            waker = _wakers[loop] = _Waker(loop)
        return waker


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


_NO_EVENTS: deque[bytes] = deque(maxlen=0)
"""The queue of a channel that has had no event yet, shared: a deque's first block costs
more than half a KiB, and most streams wait idle. Never appended to (it would drop)."""


class _Delivery(Enum):
    """What :meth:`EventChannel._deliver` did with an event (the topic's side of a channel)."""

    SENT = "sent"
    DROPPED_OLDEST = "dropped_oldest"
    FULL = "full"
    CLOSED = "closed"


class EventChannel:
    """A bounded channel of events from producers to one open event stream.

    ``put`` blocks the calling thread while the buffer is full (Clojure's ``>!!``) and
    ``send`` is its awaitable twin (``>!``); ``offer`` never waits. All return ``False`` when
    the event was not taken: the channel is closed (by the producer, by the client leaving,
    by the server stopping), or, for ``offer`` and a ``put`` that timed out, still full.
    Events are validated and encoded when they are put, so a bad event raises in the
    producer, not in the server.

    Handing an event over never waits on the event loop: the buffer is guarded by a lock,
    and the loop is woken only when the stream's writer is idle, waiting for an event.
    """

    # Thousands of channels sit idle at once: what only some of them need (a queue once an
    # event comes, a condition once a put() must wait, a replay) is made on first use.
    __slots__ = (
        "_ahead",
        "_buffer",
        "_close_waiters",
        "_closed",
        "_heartbeat",
        "_heartbeat_at",
        "_items",
        "_lock",
        "_loop",
        "_replayed",
        "_room",
        "_senders",
        "_severed",
        "_waker",
        "_warned_full_on_loop",
        "_writer",
        "_writer_task",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, buffer: int = 10) -> None:
        if isinstance(buffer, bool) or not isinstance(buffer, int) or buffer < 1:
            raise ValueError(f"buffer must be a positive int, got {buffer!r}")
        self._loop = loop
        self._waker = _waker_of(loop)
        self._buffer = buffer
        self._lock = threading.Lock()
        # Blocked put() calls wait on this; it is notified when the writer takes events.
        self._room: threading.Condition | None = None
        self._items = _NO_EVENTS
        # Events a topic replays: they go out after the first _ahead of _items and do not
        # count against the buffer, which bounds what is published live.
        self._replayed = _NO_EVENTS
        self._ahead = 0
        self._closed = False
        self._severed = False  # cut by _cut(): the connection is to be dropped, not ended
        self._writer: asyncio.Future[bool] | None = None  # the writer, idle in take()
        self._senders: list[asyncio.Future[None]] = []  # send() calls waiting for room
        self._close_waiters: list[asyncio.Future[None]] = []
        self._writer_task: asyncio.Task[Any] | None = None  # set by the stream serving it
        self._warned_full_on_loop = False
        # One heartbeat timer per stream, moved forward only when it fires early.
        self._heartbeat: asyncio.TimerHandle | None = None
        self._heartbeat_at = 0.0

    @property
    def closed(self) -> bool:
        """Whether the channel has been closed; events are then refused."""
        return self._closed

    def offer(self, event: Any) -> bool:
        """Put ``event`` if the buffer has room, never waiting; ``False`` if full or closed."""
        return self._offer(encode_event(event)) is _Delivery.SENT

    def put(self, event: Any, timeout: float | None = None) -> bool:
        """Put ``event``, blocking at most ``timeout`` seconds (``None``: for as long as it
        takes) while the buffer is full; ``False`` if closed or still full at the timeout.

        Safe from any thread. A blocked put costs nothing while it waits: it sleeps until
        the writer makes room or the channel closes. On a thread running an event loop
        (inside ``async def`` code) waiting would block that loop, so ``put`` acts as
        ``offer`` there: a full buffer refuses the event (logged once per channel);
        ``await channel.send(event)`` is the waiting form for async code.
        """
        data = encode_event(event)
        if _running_loop() is not None:
            delivery = self._offer(data)
            if delivery is _Delivery.FULL and not self._warned_full_on_loop:
                self._warned_full_on_loop = True
                log.warning(
                    "EventChannel.put() in async code found the buffer full and dropped the "
                    "event; use `await channel.send(event)` there, which waits for room"
                )
            return delivery is _Delivery.SENT
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while not self._closed and len(self._items) >= self._buffer:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                if self._room is None:
                    self._room = threading.Condition(self._lock)
                self._room.wait(remaining)
            if self._closed:
                return False
            writer = self._append(data)
        self._wake_writer(writer)
        return True

    async def send(self, event: Any) -> bool:
        """Send ``event``, waiting while the buffer is full; ``False`` if closed.

        Works from any event loop, the server's or another one.
        """
        data = encode_event(event)
        while True:
            with self._lock:
                if self._closed:
                    return False
                if len(self._items) < self._buffer:
                    writer = self._append(data)
                    break
                room = asyncio.get_running_loop().create_future()
                self._senders.append(room)
            try:
                await room
            finally:
                with self._lock:
                    if room in self._senders:
                        self._senders.remove(room)
        self._wake_writer(writer)
        return True

    def close(self) -> None:
        """Close the channel: buffered events are still sent, then the stream ends."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._room is not None:
                self._room.notify_all()
            waiting = [*self._senders, *self._close_waiters]
            self._senders.clear()
            self._close_waiters.clear()
            writer, self._writer = self._writer, None
        self._wake_all(waiting)
        self._wake_writer(writer)

    async def wait_closed(self) -> None:
        """Return once the channel is closed: by its producer, the client or the server."""
        with self._lock:
            if self._closed:
                return
            closed = asyncio.get_running_loop().create_future()
            self._close_waiters.append(closed)
        await closed

    async def take(self, timeout: float | None) -> bytes | None:
        """The events buffered now, joined into one chunk of up to about
        :data:`CHUNK_SIZE` bytes, waiting for one if there is none; :data:`HEARTBEAT` after
        ``timeout`` idle seconds; ``None`` once closed and drained. Raises
        :class:`asyncio.CancelledError` once the stream is cut, so that the server drops the
        connection instead of ending the response (and keeping the connection alive).

        Only the stream's writer calls this, on the channel's event loop.
        """
        while True:
            with self._lock:
                if self._severed:
                    raise asyncio.CancelledError("the stream was cut")
                if self._items or self._replayed:
                    chunk, senders = self._take_chunk()
                    break
                if self._closed:
                    return None
                writer = self._writer = self._loop.create_future()
            if timeout is not None:
                self._heartbeat_after(timeout)
            try:
                woken = await writer
            finally:
                with self._lock:
                    if self._writer is writer:
                        self._writer = None
            if woken is False and not (self._items or self._replayed):
                return HEARTBEAT
        if senders and len(chunk) < CHUNK_SIZE:
            # send() calls were waiting for room: let them fill it for one turn of the loop
            # and take what they add into this chunk, one write instead of two. Nobody
            # waited, nothing waits: a lone event is never held back.
            self._wake_all(senders)
            await asyncio.sleep(0)
            with self._lock:
                if not (self._items or self._replayed) or self._severed:
                    return chunk
                more, senders = self._take_chunk(CHUNK_SIZE - len(chunk))
            chunk += more
        self._wake_all(senders)
        return chunk

    def _take_chunk(self, size: int = CHUNK_SIZE) -> tuple[bytes, list[asyncio.Future[None]]]:
        """Under the lock: the next chunk, and the send() calls to wake now there is room."""
        chunk = self._next_chunk(size)
        if self._room is not None:
            self._room.notify_all()
        senders: list[asyncio.Future[None]] = []
        if self._senders:
            senders, self._senders = self._senders, []
        return chunk, senders

    def _heartbeat_after(self, timeout: float) -> None:
        """Wake the idle writer with ``False`` ``timeout`` seconds from now, unless it is
        woken before. The timer is kept across waits rather than made and cancelled for
        each: one that fires early, for a wait that has since ended, moves itself forward."""
        self._heartbeat_at = self._loop.time() + timeout
        timer = self._heartbeat
        if timer is not None and timer.when() > self._heartbeat_at:
            timer.cancel()
            timer = None
        if timer is None:
            self._heartbeat = self._loop.call_at(self._heartbeat_at, self._heartbeat_due)

    def _heartbeat_due(self) -> None:
        self._heartbeat = None
        if self._loop.time() < self._heartbeat_at:
            self._heartbeat = self._loop.call_at(self._heartbeat_at, self._heartbeat_due)
        elif (writer := self._writer) is not None:
            _wake(writer, False)

    def _stop_heartbeat(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat = None

    # --- the topic's side: delivery without encoding, replay, and cutting a slow client ---

    def _offer(self, data: bytes) -> _Delivery:
        return self._deliver(data, self._buffer)

    def _deliver(self, data: bytes, limit: int, *, drop_oldest: bool = False) -> _Delivery:
        """Append an encoded event unless ``limit`` events wait already; with ``drop_oldest``
        the oldest waiting event makes room instead. Never blocks."""
        with self._lock:
            if self._closed:
                return _Delivery.CLOSED
            delivery = _Delivery.SENT
            if len(self._items) >= limit:
                if not drop_oldest:
                    return _Delivery.FULL
                self._items.popleft()
                self._ahead = max(0, self._ahead - 1)
                delivery = _Delivery.DROPPED_OLDEST
            writer = self._append(data)
        self._wake_writer(writer)
        return delivery

    def _replay(self, chunks: Iterable[bytes]) -> None:
        """Append events a topic replays; they do not count against the buffer, which
        bounds only what is published live."""
        with self._lock:
            if self._closed:
                return
            self._ahead = len(self._items)
            if self._replayed is _NO_EVENTS:
                self._replayed = deque()
            self._replayed.extend(chunks)
            writer = self._take_idle_writer()
        self._wake_writer(writer)

    def _cut(self) -> None:
        """Drop the connection now, and what is buffered, even if the client reads nothing.

        The writer's task is cancelled, which makes the server close the connection: at
        once if it is stuck writing to a client that does not read, else at its next
        ``take``.
        """
        with self._lock:
            self._severed = True
            self._items = self._replayed = _NO_EVENTS
            self._ahead = 0
            stuck = self._writer is None and self._writer_task is not None
        self.close()
        if stuck:
            assert self._writer_task is not None
            self._call_on_loop(self._writer_task.cancel)

    def _discard(self) -> None:
        """The stream is over: drop what is buffered, close, and stop the heartbeat (on the
        channel's loop)."""
        with self._lock:
            self._items = self._replayed = _NO_EVENTS
            self._ahead = 0
        self.close()
        self._stop_heartbeat()

    def _next_chunk(self, limit: int = CHUNK_SIZE) -> bytes:
        # Bounded, so that a long replay to many reconnecting clients is not copied whole
        # for each of them at once.
        parts: list[bytes] = []
        size = 0
        while size < limit:
            if self._ahead or not self._replayed:
                if not self._items:
                    break
                self._ahead = max(0, self._ahead - 1)
                parts.append(self._items.popleft())
            else:
                parts.append(self._replayed.popleft())
            size += len(parts[-1])
        return b"".join(parts)

    def _append(self, data: bytes) -> asyncio.Future[bool] | None:
        if self._items is _NO_EVENTS:
            self._items = deque()
        self._items.append(data)
        return self._take_idle_writer()

    def _take_idle_writer(self) -> asyncio.Future[bool] | None:
        writer, self._writer = self._writer, None
        return writer

    def _wake_writer(self, writer: asyncio.Future[bool] | None) -> None:
        if writer is not None:
            self._waker.wake(writer, True)

    def _wake_all(self, futures: Iterable[asyncio.Future[None]]) -> None:
        for future in futures:
            # A sender may wait on another loop than the stream's (whose waker is looked up
            # under a lock: only then).
            loop = future.get_loop()
            (self._waker if loop is self._loop else _waker_of(loop)).wake(future)

    def _call_on_loop(self, fn: Callable[[], Any]) -> None:
        if _running_loop() is self._loop:
            fn()
        elif not self._loop.is_closed():
            self._loop.call_soon_threadsafe(fn)


class EventStream:
    """The body of an event-stream response: an async iterator of encoded events.

    The server iterates it after sending the headers. The first step starts
    ``stream_ready``; then each step yields every event buffered (several events coalesce
    into one chunk when the client is slower than the producers), or a heartbeat comment
    after ``heartbeat_delay`` idle seconds, until the channel is closed and drained.
    ``on_client_disconnect`` is called once when the stream ends, however it ends.
    """

    __slots__ = (
        "_closed",
        "_producer",
        "buffer",
        "channel",
        "context",
        "heartbeat_delay",
        "on_client_disconnect",
        "stream_ready",
    )

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
        self._closed = False
        # What runs stream_ready, until it is done: a thread's future or a task.
        self._producer: asyncio.Future[Any] | None = None

    def close(self) -> None:
        """End the stream after what is buffered (the server calls this when it stops)."""
        self._closed = True
        if self.channel is not None:
            self.channel.close()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._events()

    async def _events(self) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        channel = self.channel = EventChannel(loop, self.buffer)
        channel._writer_task = asyncio.current_task(loop)
        # What stream_ready and on_client_disconnect see: the context, and the channel (it
        # replaces the context without it, which an open stream need not hold twice).
        context = self.context = {**self.context, "event_channel": channel}
        try:
            if self._closed:  # closed before the first step: the server is stopping
                channel.close()
            else:
                self._producer = self._start(channel, context)
                if self._producer is not None:
                    self._producer.add_done_callback(self._producer_done)
            while (chunk := await channel.take(self.heartbeat_delay)) is not None:
                yield chunk
        finally:
            channel._discard()
            if self._producer is not None:
                self._producer.cancel()
            self._notify_disconnect(context)

    def _producer_done(self, producer: asyncio.Future[Any]) -> None:
        # A stream whose producer is done (an async stream_ready that only subscribed
        # something, a thread that ended) keeps no task or future for it.
        if self._producer is producer:
            self._producer = None

    def _start(self, channel: EventChannel, context: Context) -> asyncio.Future[Any] | None:
        fn = self.stream_ready
        if _is_async(fn):
            return self._run_on_loop(self._call(fn, channel, context), channel)
        loop = asyncio.get_running_loop()
        producer: asyncio.Future[Any] = loop.create_future()

        def run() -> None:
            # As Pedestal runs it: on a thread, so blocking code never stalls the server.
            try:
                result = self._call(fn, channel, context)
                if inspect.isawaitable(result):  # e.g. a lambda returning a coroutine
                    loop.call_soon_threadsafe(self._chain, producer, result, channel)
                else:
                    loop.call_soon_threadsafe(_wake, producer)
            except RuntimeError:  # the loop closed meanwhile
                pass

        threading.Thread(target=run, name="replkit-stream-ready", daemon=True).start()
        return producer

    def _chain(self, producer: asyncio.Future[Any], result: Any, channel: EventChannel) -> None:
        if producer.cancelled():
            asyncio.ensure_future(result).cancel()
            return
        task = self._run_on_loop(result, channel)
        task.add_done_callback(lambda _: _wake(producer))
        producer.add_done_callback(lambda f: task.cancel() if f.cancelled() else None)

    def _call(self, fn: StreamReady, channel: EventChannel, context: Context) -> Any:
        try:
            return fn(channel, context)
        except Exception:
            log.exception("stream_ready %s raised; closing the stream", name_of(fn))
            channel.close()
            return None

    def _run_on_loop(self, awaitable: Any, channel: EventChannel) -> asyncio.Future[Any]:
        task = asyncio.ensure_future(awaitable)
        task.add_done_callback(functools.partial(self._ran, channel))
        return task

    def _ran(self, channel: EventChannel, task: asyncio.Future[Any]) -> None:
        """stream_ready's task is done: if it raised, say so and close the stream."""
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "stream_ready %s raised; closing the stream",
                name_of(self.stream_ready),
                exc_info=task.exception(),
            )
            channel.close()

    def _notify_disconnect(self, context: Context) -> None:
        callback = self.on_client_disconnect
        if callback is None:
            return
        try:
            result = callback(context)
        except Exception:
            log.exception("on_client_disconnect %s raised", name_of(callback))
            return
        if result is not None and inspect.isawaitable(result):

            def report(task: asyncio.Future[Any]) -> None:
                if not task.cancelled() and task.exception() is not None:
                    log.error(
                        "on_client_disconnect %s raised",
                        name_of(callback),
                        exc_info=task.exception(),
                    )

            asyncio.ensure_future(result).add_done_callback(report)


def _is_async(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - an object with an async __call__
    )


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
    called: a plain function on a thread of its own (so it may block, as in Pedestal), an
    ``async def`` one as a task on the server's loop. It should set producers in motion, or
    itself produce. The stream stays open until the channel is closed or the client leaves.
    ``on_client_disconnect(context)`` is then called once on the server's loop, however the
    stream ended (client gone, channel closed, server stopping, an error).

    Both get the context with ``"event_channel"`` (the channel) and ``"last_event_id"``
    (see :func:`last_event_id`); the returned context carries the latter. A heartbeat comment
    goes out after ``heartbeat_delay`` seconds without an event (``None``: never).
    ``buffer`` bounds the events waiting between producers and the socket.
    """
    if isinstance(buffer, bool) or not isinstance(buffer, int) or buffer < 1:
        raise ValueError(f"buffer must be a positive int, got {buffer!r}")
    if heartbeat_delay is not None and heartbeat_delay <= 0:
        raise ValueError(f"heartbeat_delay must be positive or None, got {heartbeat_delay!r}")
    context = {**context, "last_event_id": last_event_id(context)}
    body = EventStream(
        stream_ready,
        context,
        heartbeat_delay=heartbeat_delay,
        buffer=buffer,
        on_client_disconnect=on_client_disconnect,
    )
    return {**context, "response": {"status": 200, "headers": dict(HEADERS), "body": body}}


def __getattr__(name: str) -> Any:
    # Topics build on this module, so they live in replkit.topic and are imported on first
    # use here: `replkit.sse.Topic` without an import cycle.
    if name in ("Topic", "topic_stream"):
        from replkit import topic

        return getattr(topic, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
