"""The one client of every stream scenario, the same for every contender: raw asyncio
connections to 127.0.0.1, each a ``GET`` of an event stream whose ``data:`` lines it counts.

Lighter than an HTTP client library, so that the figures are mostly the servers'. A stream
is requested with ``Connection: close``: the server closes the connection after the last
chunk, and a stream that ended cleanly is one whose last bytes are the chunked encoding's
terminator.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import time
from collections.abc import Iterable

DATA = b"data:"
END = b"0\r\n\r\n"
"""The last chunk of a chunked response: a stream that ends with it ended cleanly (an
event's bytes end with a blank line, so a chunk carrying one never ends like this)."""


class Tally:
    """A count many connections add to, which a coroutine can await reaching a value."""

    def __init__(self) -> None:
        self.value = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    def add(self, n: int = 1) -> None:
        """Count ``n`` more."""
        self.value += n
        if self._waiters and self.value >= self._waiters[0][0]:
            reached = [w for w in self._waiters if self.value >= w[0]]
            self._waiters = [w for w in self._waiters if self.value < w[0]]
            for _, future in reached:
                if not future.done():
                    future.set_result(None)

    async def reach(self, value: int, timeout: float) -> None:
        """Return once the count is ``value`` or more; :class:`TimeoutError` after
        ``timeout`` seconds."""
        if self.value >= value:
            return
        future = asyncio.get_running_loop().create_future()
        self._waiters.append((value, future))
        self._waiters.sort(key=lambda w: w[0])
        async with asyncio.timeout(timeout):
            await future


class Streams:
    """What a group of streams received, together: the counts scenarios wait on."""

    def __init__(self) -> None:
        self.answered = Tally()  # streams whose response head arrived
        self.events = Tally()  # data lines, over every stream
        self.ended = Tally()  # streams over, cleanly or not
        self.refused = 0  # answered with another status than 200
        self.clients: list[StreamClient] = []


class StreamClient(asyncio.Protocol):
    """One event stream: sends its request on connection, counts the ``data:`` lines of
    what follows the response head, and notes when each step happened."""

    def __init__(self, request: bytes, streams: Streams) -> None:
        self.request = request
        self.streams = streams
        self.transport: asyncio.Transport | None = None
        self.started = time.perf_counter()
        self.answered_at: float | None = None
        self.ended_at: float | None = None
        self.events = 0
        self.clean_end = False
        self.head = asyncio.get_running_loop().create_future()  # done with the response head
        self._head = b""
        self._tail = b""  # the last bytes, so that a line split between reads still counts
        self._last = b""  # the last bytes received, to tell a clean end

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if self.answered_at is None:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            self.answered_at = time.perf_counter()
            status = self._head.split(b" ", 2)[1]
            if status != b"200":
                self.streams.refused += 1
            data, self._head = self._head[end + 4 :], b""
            self.streams.answered.add()
            if not self.head.done():  # cancelled when the opening timed out
                self.head.set_result(None)
        seen = self._tail + data
        count = seen.count(DATA)
        self._tail = seen[-(len(DATA) - 1) :]
        self._last = seen[-len(END) :]
        if count:
            self.events += count
            self.streams.events.add(count)

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended_at = time.perf_counter()
        self.clean_end = exc is None and self._last == END
        if not self.head.done():
            self.head.set_result(None)
        self.streams.ended.add()

    def close(self) -> None:
        """Leave: close the connection from the client's side."""
        if self.transport is not None:
            self.transport.close()


def stream_request(port: int, path: str) -> bytes:
    """The request of a stream, as a browser's EventSource sends it (less its cookies)."""
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n"
        "Cache-Control: no-cache\r\nConnection: close\r\n\r\n"
    ).encode()


async def open_streams(
    port: int,
    path: str,
    count: int,
    streams: Streams | None = None,
    *,
    at_once: int | None = 200,
    timeout: float = 60.0,
) -> Streams:
    """Open ``count`` streams of ``path`` and return once each has its response head.

    At most ``at_once`` connections are being made at a time (``None``: all at once, a
    storm). Raises :class:`TimeoutError` if they are not all answered within ``timeout``.

    The client's garbage collector is paused meanwhile: in the runner, whose heap holds
    matplotlib and the samples so far, its collections delayed the last connections of a
    5,000-client storm by about 0.1 s, which is the client's time, not the server's.
    """
    streams = streams or Streams()
    loop = asyncio.get_running_loop()
    request = stream_request(port, path)
    gate = asyncio.Semaphore(at_once or count or 1)
    target = streams.answered.value + count

    async def one() -> None:
        async with gate:
            client = StreamClient(request, streams)
            streams.clients.append(client)
            await loop.create_connection(lambda: client, "127.0.0.1", port)
            if at_once is not None:
                # Holding the gate until the head arrives keeps `at_once` requests in flight.
                await client.head

    collecting = gc.isenabled()
    gc.disable()
    try:
        async with asyncio.timeout(timeout):
            await asyncio.gather(*(one() for _ in range(count)))
            await streams.answered.reach(target, timeout)
    except TimeoutError:
        answered = streams.answered.value - target + count
        raise TimeoutError(f"{answered} of {count} streams answered within {timeout:g} s") from None
    finally:
        if collecting:
            gc.enable()
    return streams


def close_all(clients: Iterable[StreamClient]) -> None:
    """Close every stream's connection."""
    for client in clients:
        client.close()


def frozen_stream(port: int, path: str) -> socket.socket:
    """A stream whose client never reads: a socket with a small receive buffer, which sends
    its request and nothing else. Close it when done."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(stream_request(port, path))
    return sock
