"""replkit.sse: the event encoding, the event channel, and streams served for real."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from conftest import app_map, wait_until

from replkit import sse
from replkit.aiohttp import AiohttpConnector, create_connector
from replkit.sse import EventChannel, encode_event, start_stream


@pytest.mark.parametrize(
    ("event", "encoded"),
    [
        ({"name": "counter", "data": 0}, b"event: counter\ndata: 0\n\n"),
        ({"data": "plain"}, b"data: plain\n\n"),
        ("just a string", b"data: just a string\n\n"),
        (42, b"data: 42\n\n"),
        (None, b"data: \n\n"),
        (b"bytes \xc3\xa9", "data: bytes é\n\n".encode()),
        ({"name": "", "data": "blank name omitted"}, b"data: blank name omitted\n\n"),
        ({"name": "n", "id": 7, "data": "x"}, b"event: n\nid: 7\ndata: x\n\n"),
        ({"data": "x", "retry": 1500}, b"retry: 1500\ndata: x\n\n"),
        ({"data": "a\nb\r\nc\rd"}, b"data: a\ndata: b\ndata: c\ndata: d\n\n"),
        ({"data": "trailing\n"}, b"data: trailing\ndata: \n\n"),
        ({"data": "ünïcode ✓"}, "data: ünïcode ✓\n\n".encode()),
        ({"data": {"text": "hi", "n": [1, 2.5]}}, b'data: {"text":"hi","n":[1,2.5]}\n\n'),
        ([1, "é", None], 'data: [1,"é",null]\n\n'.encode()),
        ({"data": {"emoji": "🙂", "nl": "a\nb"}}, 'data: {"emoji":"🙂","nl":"a\\nb"}\n\n'.encode()),
        ({"data": "{'as': 'is'}"}, b"data: {'as': 'is'}\n\n"),
    ],
)
def test_encode_event(event: Any, encoded: bytes) -> None:
    assert encode_event(event) == encoded


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({"name": "a\nb", "data": 1}, "event name 'a\\nb' contains CR, LF or NUL"),
        ({"name": "a\rb", "data": 1}, "event name 'a\\rb' contains CR, LF or NUL"),
        ({"id": "x\0", "data": 1}, "event id 'x\\x00' contains CR, LF or NUL"),
        ({"data": 1, "retry": -1}, "event retry -1 must be a non-negative int"),
        ({"data": 1, "retry": "10"}, "event retry '10' must be a non-negative int"),
        ({"data": 1, "retry": True}, "event retry True must be a non-negative int"),
        ({"event": "counter", "data": 1}, "event has unknown keys ['event']"),
        ({"data": {"x": float("nan")}}, "event data {'x': nan} is not JSON-serializable"),
        ({"data": [b"bytes"]}, "event data [b'bytes'] is not JSON-serializable"),
        ({"data": "\ud800"}, "event text cannot be sent as UTF-8"),
    ],
)
def test_encode_event_rejects(event: Any, message: str) -> None:
    with pytest.raises(ValueError) as info:
        encode_event(event)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_start_stream_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="buffer must be a positive int"):
        start_stream(lambda ch, ctx: None, {"request": {}}, buffer=0)
    with pytest.raises(ValueError, match="heartbeat_delay must be positive or None"):
        start_stream(lambda ch, ctx: None, {"request": {}}, heartbeat_delay=0)


def test_start_stream_returns_the_context_with_an_open_response() -> None:
    context = start_stream(lambda ch, ctx: None, {"request": {"uri": "/"}, "mine": 1})
    assert context["mine"] == 1
    response = context["response"]
    assert response["status"] == 200
    assert response["headers"] == {
        "Content-Type": "text/event-stream; charset=UTF-8",
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",
    }
    assert isinstance(response["body"], sse.EventStream)


# --- the channel on its own --------------------------------------------------------------


async def test_put_from_a_thread_blocks_while_full_and_take_coalesces() -> None:
    channel = EventChannel(asyncio.get_running_loop(), buffer=2)
    returned = [threading.Event() for _ in range(3)]

    def producer() -> None:
        for i, done in enumerate(returned):
            assert channel.put({"data": i})
            done.set()

    thread = threading.Thread(target=producer)
    thread.start()
    await asyncio.to_thread(returned[1].wait, 5)
    assert not await asyncio.to_thread(returned[2].wait, 0.3), "third put did not block"
    # Everything buffered comes out as one chunk, and that makes room for the blocked put.
    assert await channel.take(None) == b"data: 0\n\ndata: 1\n\n"
    assert await asyncio.to_thread(returned[2].wait, 5)
    assert await channel.take(None) == b"data: 2\n\n"
    await asyncio.to_thread(thread.join, 5)
    assert not thread.is_alive()


async def test_put_with_a_timeout_and_offer() -> None:
    channel = EventChannel(asyncio.get_running_loop(), buffer=1)
    assert await asyncio.to_thread(channel.put, "fits", 0)
    started = time.monotonic()
    assert await asyncio.to_thread(channel.put, "full", 0.2) is False
    assert time.monotonic() - started >= 0.2
    assert await asyncio.to_thread(channel.offer, "full") is False
    assert await channel.take(None) == b"data: fits\n\n"
    assert await asyncio.to_thread(channel.offer, "room again") is True
    channel.close()
    assert await asyncio.to_thread(channel.offer, "closed") is False
    assert await channel.take(None) == b"data: room again\n\n"
    assert await channel.take(None) is None


async def test_close_wakes_blocked_producers_and_drains_what_is_buffered() -> None:
    channel = EventChannel(asyncio.get_running_loop(), buffer=1)
    assert await channel.send("first")
    blocked_send = asyncio.ensure_future(channel.send("second"))
    blocked_put = asyncio.ensure_future(asyncio.to_thread(channel.put, "third"))
    await asyncio.sleep(0)  # let send() park on the full buffer
    assert not blocked_send.done()
    closed = asyncio.ensure_future(channel.wait_closed())
    channel.close()
    assert await asyncio.wait_for(blocked_send, 5) is False
    assert await asyncio.wait_for(blocked_put, 5) is False
    await asyncio.wait_for(closed, 5)
    assert channel.closed
    assert channel.put("late") is False
    assert await channel.send("late") is False
    assert await channel.take(None) == b"data: first\n\n"
    assert await channel.take(None) is None


async def test_put_in_async_code_never_blocks_nor_raises(caplog: pytest.LogCaptureFixture) -> None:
    channel = EventChannel(asyncio.get_running_loop(), buffer=1)
    assert channel.put("fits")
    with caplog.at_level(logging.WARNING, logger="replkit.sse"):
        assert channel.put("would block") is False
        assert channel.put("would block again") is False
    warnings = [r.getMessage() for r in caplog.records if r.name == "replkit.sse"]
    assert len(warnings) == 1 and "await channel.send(event)" in warnings[0]
    assert await channel.take(None) == b"data: fits\n\n"


async def test_take_returns_a_heartbeat_after_the_idle_delay() -> None:
    channel = EventChannel(asyncio.get_running_loop())
    assert await channel.take(0.05) == sse.HEARTBEAT
    await channel.send("x")
    assert await channel.take(0.05) == b"data: x\n\n"


async def test_a_heartbeat_comes_a_whole_delay_after_the_last_event() -> None:
    loop = asyncio.get_running_loop()
    channel = EventChannel(loop)

    async def feed() -> None:  # an event every 0.04 s, each sooner than the delay
        for i in range(4):
            await asyncio.sleep(0.04)
            await channel.send(i)

    feeding = asyncio.create_task(feed())
    chunks = [await channel.take(0.1) for _ in range(4)]
    last_event = loop.time()
    assert chunks == [b"data: %d\n\n" % i for i in range(4)]  # no heartbeat among them
    assert await channel.take(0.1) == sse.HEARTBEAT
    assert loop.time() - last_event >= 0.09
    await feeding
    channel._discard()
    assert await channel.take(0.1) is None


async def test_take_sends_what_waiting_senders_add_in_the_same_chunk() -> None:
    channel = EventChannel(asyncio.get_running_loop(), buffer=2)

    async def produce() -> None:
        for i in range(7):
            await channel.send(i)
        channel.close()

    producing = asyncio.create_task(produce())
    await asyncio.sleep(0)  # the producer fills the buffer, then waits for room
    chunks = []
    while (chunk := await channel.take(None)) is not None:
        chunks.append(chunk)
    await producing
    # Two buffered and the two the woken sender adds at once: one write, not two.
    assert chunks[0] == b"".join(b"data: %d\n\n" % i for i in range(4))
    assert b"".join(chunks) == b"".join(b"data: %d\n\n" % i for i in range(7))


async def test_send_from_another_event_loop_waits_for_room() -> None:
    channel = EventChannel(asyncio.get_running_loop(), buffer=1)

    async def two() -> list[bool]:
        return [await channel.send("from afar"), await channel.send("and again")]

    sent = asyncio.ensure_future(asyncio.to_thread(lambda: asyncio.run(two())))
    assert await channel.take(None) == b"data: from afar\n\n"
    assert await asyncio.wait_for(sent, 5) == [True, True]
    assert await channel.take(None) == b"data: and again\n\n"


def test_a_bad_event_raises_in_the_producer() -> None:
    loop = asyncio.new_event_loop()
    try:
        channel = EventChannel(loop)
        with pytest.raises(ValueError, match="contains CR, LF or NUL"):
            channel.put({"name": "bad\n", "data": 1})
        with pytest.raises(ValueError, match="is not JSON-serializable"):
            channel.offer({"data": {"when": object()}})
    finally:
        loop.close()


# --- streams served by a real server -----------------------------------------------------


def stream_app(stream_ready: Callable[..., Any], **options: Any) -> list[tuple[Any, ...]]:
    def enter(context: dict[str, Any]) -> dict[str, Any]:
        return start_stream(stream_ready, context, **options)

    return [
        ("/", "get", lambda _: {"status": 200, "body": "up"}),
        ("/s", "get", {"name": "s", "enter": enter}),
    ]


async def read_all(url: str) -> tuple[aiohttp.ClientResponse, bytes]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response, await asyncio.wait_for(response.read(), 10)


async def test_stream_headers_and_events_from_a_thread(
    serve: Callable[..., AiohttpConnector],
) -> None:
    def ready(channel: EventChannel, context: dict[str, Any]) -> None:
        def produce() -> None:
            for i in range(5):
                channel.put({"name": "tick", "data": i, "id": i})
            channel.close()

        threading.Thread(target=produce).start()

    server = serve(stream_app(ready))
    response, body = await read_all(f"{server.url}/s")
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/event-stream; charset=UTF-8"
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-Accel-Buffering"] == "no"
    assert response.headers["X-Content-Type-Options"] == "nosniff"  # leave stage still ran
    assert body == b"".join(b"event: tick\nid: %d\ndata: %d\n\n" % (i, i) for i in range(5))


async def test_async_stream_ready_sends_more_than_the_buffer(
    serve: Callable[..., AiohttpConnector],
) -> None:
    async def ready(channel: EventChannel, context: dict[str, Any]) -> None:
        for i in range(50):
            assert await channel.send(i)
        channel.close()

    server = serve(stream_app(ready, buffer=2))
    _, body = await read_all(f"{server.url}/s")
    assert body == b"".join(b"data: %d\n\n" % i for i in range(50))


async def test_heartbeats_only_when_idle(serve: Callable[..., AiohttpConnector]) -> None:
    async def ready(channel: EventChannel, context: dict[str, Any]) -> None:
        await channel.send("first")
        await asyncio.sleep(0.35)  # idle long enough for heartbeats
        await channel.send("last")
        channel.close()

    server = serve(stream_app(ready, heartbeat_delay=0.1))
    _, body = await read_all(f"{server.url}/s")
    assert body.startswith(b"data: first\n\n:\n\n")
    assert body.endswith(b":\n\ndata: last\n\n")
    assert 1 <= body.count(sse.HEARTBEAT) <= 4

    server = serve(stream_app(ready, heartbeat_delay=None))
    _, body = await read_all(f"{server.url}/s")
    assert body == b"data: first\n\ndata: last\n\n"


async def test_client_leaving_closes_the_channel_and_calls_on_client_disconnect(
    serve: Callable[..., AiohttpConnector],
) -> None:
    disconnected = threading.Event()
    put_refused = threading.Event()

    def ready(channel: EventChannel, context: dict[str, Any]) -> None:
        def produce() -> None:
            channel.put("hello")
            while channel.put(":)"):
                pass
            put_refused.set()

        threading.Thread(target=produce, daemon=True).start()

    server = serve(stream_app(ready, on_client_disconnect=lambda ctx: disconnected.set()))
    async with aiohttp.ClientSession() as session, session.get(f"{server.url}/s") as response:
        assert await response.content.readuntil(b"\n\n") == b"data: hello\n\n"
    assert await asyncio.to_thread(disconnected.wait, 5)
    assert await asyncio.to_thread(put_refused.wait, 5)


async def test_an_idle_stream_notices_the_client_leaving(
    serve: Callable[..., AiohttpConnector],
) -> None:
    disconnected = threading.Event()

    async def ready(channel: EventChannel, context: dict[str, Any]) -> None:
        await channel.send("only event; then silence")

    server = serve(stream_app(ready, on_client_disconnect=lambda ctx: disconnected.set()))
    async with aiohttp.ClientSession() as session, session.get(f"{server.url}/s") as response:
        await response.content.readuntil(b"\n\n")
    assert await asyncio.to_thread(disconnected.wait, 5)


@pytest.mark.parametrize("kind", ["plain", "async"])
async def test_a_raising_stream_ready_closes_the_stream_and_is_logged(
    serve: Callable[..., AiohttpConnector], caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    def plain(channel: EventChannel, context: dict[str, Any]) -> None:
        raise ValueError("boom in stream_ready")

    async def asynchronous(channel: EventChannel, context: dict[str, Any]) -> None:
        raise ValueError("boom in stream_ready")

    server = serve(stream_app(plain if kind == "plain" else asynchronous))
    with caplog.at_level(logging.ERROR, logger="replkit.sse"):
        response, body = await read_all(f"{server.url}/s")
    assert (response.status, body) == (200, b"")
    record = wait_until(lambda: [r for r in caplog.records if r.name == "replkit.sse"])[0]
    assert "stream_ready" in record.getMessage()
    assert record.exc_info is not None and "boom in stream_ready" in str(record.exc_info[1])
    _, home = await read_all(f"{server.url}/")
    assert home == b"up"


async def test_stopping_the_server_ends_open_streams(
    serve: Callable[..., AiohttpConnector],
) -> None:
    async def ready(channel: EventChannel, context: dict[str, Any]) -> None:
        await channel.send("open")

    server = serve(stream_app(ready))
    async with aiohttp.ClientSession() as session, session.get(f"{server.url}/s") as response:
        assert await response.content.readuntil(b"\n\n") == b"data: open\n\n"
        await asyncio.to_thread(server.stop)
        assert await asyncio.wait_for(response.content.read(), 5) == b""
    assert not server.running


async def test_last_event_id_from_the_header_else_the_query(
    serve: Callable[..., AiohttpConnector],
) -> None:
    async def ready(channel: EventChannel, context: dict[str, Any]) -> None:
        await channel.send(context["last_event_id"] or "none")
        channel.close()

    server = serve(stream_app(ready))
    cases = [
        ({}, "", b"data: none\n\n"),
        ({"Last-Event-ID": "abc-7"}, "", b"data: abc-7\n\n"),
        ({}, "?lastEventId=abc-3", b"data: abc-3\n\n"),
        ({"Last-Event-ID": "abc-9"}, "?lastEventId=abc-3", b"data: abc-9\n\n"),
    ]
    async with aiohttp.ClientSession() as session:
        for headers, query, expected in cases:
            async with session.get(f"{server.url}/s{query}", headers=headers) as response:
                assert await asyncio.wait_for(response.read(), 5) == expected


async def test_a_plain_stream_ready_runs_on_a_thread_and_may_block(
    serve: Callable[..., AiohttpConnector],
) -> None:
    release = threading.Event()
    where: list[str] = []

    def ready(channel: EventChannel, context: dict[str, Any]) -> None:
        # Produces and blocks right here, for the life of the stream, instead of starting a
        # thread: this deadlocks in Pedestal (issue 384) and must not stall the server.
        where.append(threading.current_thread().name)
        for i in range(3):
            channel.put(i)
        release.wait(10)
        channel.put("released")
        channel.close()

    async def ready_async(channel: EventChannel, context: dict[str, Any]) -> None:
        where.append(threading.current_thread().name)
        channel.close()

    def enter_async(context: dict[str, Any]) -> dict[str, Any]:
        return start_stream(ready_async, context)

    server = serve([*stream_app(ready), ("/a", "get", {"name": "a", "enter": enter_async})])
    async with aiohttp.ClientSession() as session, session.get(f"{server.url}/s") as response:
        for i in range(3):
            assert await response.content.readuntil(b"\n\n") == b"data: %d\n\n" % i
        _, home = await read_all(f"{server.url}/")
        assert home == b"up"
        release.set()
        assert await asyncio.wait_for(response.content.read(), 5) == b"data: released\n\n"
    await read_all(f"{server.url}/a")
    assert where == ["replkit-stream-ready", "replkit-server"]


WAYS_A_STREAM_ENDS = ["client gone", "channel closed", "server stop", "drop_streams", "error"]


@pytest.mark.parametrize("way", WAYS_A_STREAM_ENDS)
async def test_on_client_disconnect_is_called_once_however_the_stream_ends(
    serve: Callable[..., AiohttpConnector], way: str
) -> None:
    given: list[EventChannel] = []
    calls: list[EventChannel] = []
    called = threading.Event()
    go_on = threading.Event()

    async def ready(channel: EventChannel, context: dict[str, Any]) -> None:
        given.append(channel)
        await channel.send("open")
        await asyncio.to_thread(go_on.wait, 10)
        if way == "channel closed":
            channel.close()
        elif way == "error":
            raise RuntimeError("the producer failed")

    def on_client_disconnect(context: dict[str, Any]) -> None:
        calls.append(context["event_channel"])
        called.set()

    routes = stream_app(ready, on_client_disconnect=on_client_disconnect)
    server = serve(routes)
    replacement = None
    async with aiohttp.ClientSession() as session:
        response = await session.get(f"{server.url}/s")
        assert await response.content.readuntil(b"\n\n") == b"data: open\n\n"
        if way == "client gone":
            response.close()
        elif way == "server stop":
            await asyncio.to_thread(server.stop)
        elif way == "drop_streams":
            replacement = create_connector(app_map(routes, port=server.bound_port), None)
            replacement.take_over(server, drop_streams=True)
        else:
            go_on.set()
        assert await asyncio.to_thread(called.wait, 5)
        if way != "client gone":
            assert await asyncio.wait_for(response.content.read(), 5) == b""
        response.close()
    go_on.set()  # ends the wait of a producer that was cancelled
    if replacement is not None:
        await asyncio.to_thread(replacement.stop)
    wait_until(lambda: given and given[0].closed, what="the channel to close")
    assert calls == given  # once, with the very channel stream_ready was given


@pytest.mark.parametrize("kind", ["async", "raising"])
async def test_an_async_or_raising_on_client_disconnect(
    serve: Callable[..., AiohttpConnector], caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    ran = threading.Event()

    async def ready(channel: EventChannel, context: dict[str, Any]) -> None:
        await channel.send("bye")
        channel.close()

    async def on_client_disconnect(context: dict[str, Any]) -> None:
        await asyncio.sleep(0)
        ran.set()
        if kind == "raising":
            raise RuntimeError("cleanup failed")

    server = serve(stream_app(ready, on_client_disconnect=on_client_disconnect))
    with caplog.at_level(logging.ERROR, logger="replkit.sse"):
        _, body = await read_all(f"{server.url}/s")
        assert body == b"data: bye\n\n"
        assert await asyncio.to_thread(ran.wait, 5)
        if kind == "raising":
            record = wait_until(lambda: [r for r in caplog.records if r.name == "replkit.sse"])[0]
            assert record.getMessage().startswith("on_client_disconnect ")
            assert str(record.exc_info[1]) == "cleanup failed"  # type: ignore[index]
    assert not [r for r in caplog.records if kind == "async" and r.name == "replkit.sse"]
