"""replkit.aiohttp: the connector served for real, in both event-loop worlds."""

from __future__ import annotations

import asyncio
import logging
import socket
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from http.client import HTTPConnection, IncompleteRead
from typing import Any

import aiohttp
import pytest
from conftest import Hammer, server_threads, wait_until

from replkit import http
from replkit.aiohttp import AiohttpConnector, ServerError, create_connector
from replkit.errors import ReplkitError
from replkit.interceptor import Interceptor, InterceptorError
from replkit.sse import EventChannel, start_stream


def plain_map(*interceptors: Any, port: int = 0) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": port, "interceptors": [http.not_found, *interceptors]}


def answer(text: str) -> Interceptor:
    return Interceptor(
        name=f"answer-{text}",
        enter=lambda ctx: {**ctx, "response": {"status": 200, "body": text}},
    )


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_outside_an_event_loop_it_serves_from_a_background_thread() -> None:
    connector = create_connector(plain_map(answer("hi")), None).start()
    port = connector.bound_port
    try:
        assert connector.running
        assert len(server_threads()) == 1
        assert get(connector.url) == (200, b"hi")
    finally:
        connector.stop()
    assert not connector.running
    assert not server_threads()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


async def test_inside_a_running_loop_it_serves_on_that_loop_without_blocking() -> None:
    connector = create_connector(plain_map(answer("on the caller's loop")), None).start()
    try:
        assert not server_threads()
        async with aiohttp.ClientSession() as session, session.get(connector.url) as response:
            assert await response.read() == b"on the caller's loop"
    finally:
        port = connector.bound_port
        connector.stop()  # on the loop's own thread: the socket closes now, the rest in a task
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


async def test_stop_async_waits_for_the_end() -> None:
    connector = create_connector(plain_map(answer("x")), None).start()
    await connector.stop_async()
    assert not connector.running


def test_a_taken_port_is_one_clear_line() -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        with pytest.raises(ServerError) as info:
            create_connector(plain_map(port=port), None).start()
    assert str(info.value) == f"cannot listen on 127.0.0.1:{port}: address already in use"
    assert not server_threads()


def test_the_map_must_be_complete() -> None:
    with pytest.raises(ReplkitError, match="connector map has no 'interceptors'"):
        create_connector({"host": "localhost", "port": 1}, None)
    with pytest.raises(ReplkitError, match="unknown aiohttp connector options"):
        create_connector(plain_map(), {"join": True})


def test_the_request_map(serve: Callable[..., AiohttpConnector]) -> None:
    seen: dict[str, Any] = {}

    async def enter(ctx: dict[str, Any]) -> dict[str, Any]:
        seen.update(ctx["request"], body=await ctx["request"]["body"].read())
        return {**ctx, "response": {"status": 204}}

    connector = serve(plain_map(Interceptor("capture", enter=enter)))
    request = urllib.request.Request(
        f"{connector.url}/caf%C3%A9/x?a=1&b=%20",
        data=b"payload",
        headers={"X-Thing": "yes", "Content-Type": "text/plain"},
        method="PUT",
    )
    urllib.request.urlopen(request, timeout=5).close()
    assert seen["request_method"] == "put"
    assert seen["uri"] == "/caf%C3%A9/x"
    assert seen["query_string"] == "a=1&b=%20"
    assert seen["headers"]["x-thing"] == "yes"
    assert seen["body"] == b"payload"
    assert seen["remote_addr"] == "127.0.0.1"
    assert seen["server_port"] == connector.bound_port
    assert seen["protocol"] == "HTTP/1.1"
    assert seen["scheme"] == "http"
    assert seen["server_name"] == "127.0.0.1"


@pytest.mark.parametrize(
    ("response", "logged"),
    [
        ("not a dict", "response is str, not a dict"),
        ({"status": "200"}, "response status '200' is not an int between 100 and 599"),
        ({"status": 700}, "response status 700 is not an int"),
        ({"status": 200, "body": {1, 2}}, "response body is set; expected str, bytes, dict"),
        (
            {"status": 200, "body": {"when": object()}},
            "response body is not JSON-serializable: Object of type object",
        ),
        ({"status": 200, "headers": [("a", "b")]}, "response headers are list, not a dict"),
        ({"status": 200, "headers": {1: "x"}}, "response header 1: 'x' is not named by a str"),
        (
            {"status": 200, "headers": {"Set-Cookie": ["a=1", "b=2\r\nX-Evil: 1"]}},
            "response header 'Set-Cookie': 'b=2\\r\\nX-Evil: 1' has CR, LF or NUL",
        ),
    ],
)
def test_a_malformed_response_is_a_500_and_one_log_line(
    serve: Callable[..., AiohttpConnector],
    caplog: pytest.LogCaptureFixture,
    response: Any,
    logged: str,
) -> None:
    garbage = Interceptor("garbage", enter=lambda ctx: {**ctx, "response": response})
    connector = serve(plain_map(garbage))
    with caplog.at_level(logging.ERROR, logger="replkit.server"):
        assert get(f"{connector.url}/x") == (500, b"Internal Server Error")
    (record,) = caplog.records
    assert record.getMessage().startswith(f"GET /x -> 500: {logged}")


def test_a_handler_returning_garbage_names_the_handler(
    serve: Callable[..., AiohttpConnector], caplog: pytest.LogCaptureFixture
) -> None:
    def sloppy(request: dict[str, Any]) -> Any:
        return "Hello"

    connector = serve(plain_map(sloppy))
    with caplog.at_level(logging.ERROR, logger="replkit.server"):
        assert get(connector.url)[0] == 500
    (record,) = caplog.records
    assert (
        f"handler {__name__}/test_a_handler_returning_garbage_names_the_handler.<locals>.sloppy "
        "returned str 'Hello'"
    ) in record.getMessage()


def test_an_interceptor_that_raises_is_a_500_naming_it(
    serve: Callable[..., AiohttpConnector], caplog: pytest.LogCaptureFixture
) -> None:
    def explode(ctx: dict[str, Any]) -> dict[str, Any]:
        raise KeyError("no such thing")

    connector = serve(plain_map(Interceptor("exploder", enter=explode)))
    with caplog.at_level(logging.ERROR, logger="replkit.server"):
        assert get(f"{connector.url}/boom") == (500, b"Internal Server Error")
        assert get(f"{connector.url}/boom")[0] == 500  # and it keeps serving
    record = caplog.records[0]
    assert record.getMessage() == (
        "GET /boom -> 500: KeyError in interceptor exploder during enter: 'no such thing'"
    )
    assert record.exc_info is not None and isinstance(record.exc_info[1], KeyError)


def test_an_async_iterable_body_is_streamed(serve: Callable[..., AiohttpConnector]) -> None:
    async def chunks() -> AsyncIterator[bytes | str]:
        yield b"one,"
        yield "two"

    streaming = Interceptor(
        "streaming", enter=lambda ctx: {**ctx, "response": {"status": 200, "body": chunks()}}
    )
    connector = serve(plain_map(streaming))
    assert get(connector.url) == (200, b"one,two")


def test_a_body_that_raises_mid_stream_is_logged_and_ends_the_response(
    serve: Callable[..., AiohttpConnector], caplog: pytest.LogCaptureFixture
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"partial"
        raise ValueError("body broke")

    streaming = Interceptor(
        "breaking", enter=lambda ctx: {**ctx, "response": {"status": 200, "body": chunks()}}
    )
    connector = serve(plain_map(streaming))
    with caplog.at_level(logging.ERROR, logger="replkit.server"):
        with pytest.raises(IncompleteRead):
            get(f"{connector.url}/b")
        wait_until(lambda: caplog.records)
    assert caplog.records[0].getMessage() == "GET /b: the response body raised; ending the stream"
    assert str(caplog.records[0].exc_info[1]) == "body broke"  # type: ignore[index]


def stream_forever(label: str) -> Interceptor:
    def ready(channel: EventChannel, context: dict[str, Any]) -> None:
        channel.put(label)

    def enter(ctx: dict[str, Any]) -> dict[str, Any]:
        if ctx["request"]["uri"] == "/stream":
            return start_stream(ready, ctx, heartbeat_delay=None)
        return {**ctx, "response": {"status": 200, "body": label}}

    return Interceptor(label, enter=enter)


async def test_take_over_keeps_the_socket_and_open_streams(
    serve: Callable[..., AiohttpConnector],
) -> None:
    old = serve(plain_map(stream_forever("old")))
    url, port = old.url, old.bound_port
    current = old
    try:
        async with aiohttp.ClientSession() as session, session.get(f"{url}/stream") as stream:
            assert await stream.content.readuntil(b"\n\n") == b"data: old\n\n"
            with Hammer(lambda: get(f"{url}/")[1]) as hammer:
                for i in range(20):
                    new = create_connector(plain_map(stream_forever(f"new{i}"), port=port), None)
                    current = new.take_over(current)
                    await asyncio.to_thread(
                        wait_until, lambda i=i: f"new{i}".encode() in hammer.answers
                    )
            assert not hammer.failures
            assert old.running and not old.current and current.current
            assert get(f"{url}/")[1] == b"new19"
            # The stream opened on the old connector is still open: stopping ends it.
            await asyncio.to_thread(current.stop)
            assert await asyncio.wait_for(stream.content.read(), 5) == b""
    finally:
        await asyncio.to_thread(current.stop)


async def test_take_over_can_drop_the_old_streams(serve: Callable[..., AiohttpConnector]) -> None:
    old = serve(plain_map(stream_forever("old")))
    new = create_connector(plain_map(stream_forever("new"), port=old.bound_port), None)
    try:
        async with aiohttp.ClientSession() as session, session.get(f"{old.url}/stream") as stream:
            await stream.content.readuntil(b"\n\n")
            new.take_over(old, drop_streams=True)
            assert await asyncio.wait_for(stream.content.read(), 5) == b""
        assert get(f"{new.url}/")[1] == b"new"
    finally:
        await asyncio.to_thread(new.stop)


def test_take_over_of_a_stopped_connector_just_starts(
    serve: Callable[..., AiohttpConnector],
) -> None:
    old = create_connector(plain_map(answer("old")), None)
    new = create_connector(plain_map(answer("new")), None).take_over(old)
    try:
        assert get(new.url) == (200, b"new")
    finally:
        new.stop()


def test_the_same_failure_is_logged_once_a_second_with_a_count(
    serve: Callable[..., AiohttpConnector], caplog: pytest.LogCaptureFixture
) -> None:
    def explode(ctx: dict[str, Any]) -> dict[str, Any]:
        raise KeyError("no such thing")

    connector = serve(plain_map(Interceptor("exploder", enter=explode)))
    with caplog.at_level(logging.ERROR, logger="replkit.server"):
        for _ in range(20):
            assert get(f"{connector.url}/boom")[0] == 500
        wait_until(lambda: len(caplog.records) == 2, what="the summary line")
    first, summary = caplog.records
    assert first.exc_info is not None
    assert summary.getMessage() == (
        "GET /boom -> 500: KeyError in interceptor exploder during enter: 'no such thing' "
        "(and 19 more like this in 1 s)"
    )
    assert summary.exc_info is None


def test_an_error_in_an_error_function_logs_both(
    serve: Callable[..., AiohttpConnector], caplog: pytest.LogCaptureFixture
) -> None:
    def first(ctx: dict[str, Any]) -> dict[str, Any]:
        raise ValueError("first")

    def second(ctx: dict[str, Any], err: InterceptorError) -> dict[str, Any]:
        raise RuntimeError("second")

    connector = serve(plain_map(Interceptor("handler", error=second), Interceptor("x", first)))
    with caplog.at_level(logging.ERROR, logger="replkit.server"):
        assert get(connector.url)[0] == 500
    (record,) = caplog.records
    assert "RuntimeError in interceptor handler during error: second" in record.getMessage()
    assert record.exc_info is not None
    assert "ValueError in interceptor x during enter: first" in str(record.exc_info[1].__context__)
    assert "During handling of the above exception" in caplog.text


def test_head_sends_a_streams_headers_only_and_never_starts_it(
    serve: Callable[..., AiohttpConnector],
) -> None:
    started: list[str] = []

    async def chunks() -> AsyncIterator[bytes]:
        started.append("iterated")
        yield b"data: 1\n\n"

    def enter(ctx: dict[str, Any]) -> dict[str, Any]:
        headers = {"Content-Type": "text/event-stream"}
        return {**ctx, "response": {"status": 200, "headers": headers, "body": chunks()}}

    connector = serve(plain_map(Interceptor("stream", enter=enter)))
    connection = HTTPConnection("127.0.0.1", connector.bound_port, timeout=5)
    try:
        connection.request("HEAD", "/")
        response = connection.getresponse()
        assert (response.status, response.read()) == (200, b"")
        assert response.headers["Content-Type"] == "text/event-stream"
        connection.request("GET", "/")  # the same connection, framed correctly
        assert connection.getresponse().read() == b"data: 1\n\n"
    finally:
        connection.close()
    assert started == ["iterated"]  # once: by the GET


# --- the plain case, written by replkit itself -----------------------------------------------

TEXT = {"Content-Type": "text/plain"}
EVENTS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
# (request line and headers, response: status, headers, body, whether replkit writes it):
# the plain cases replkit writes itself, and those it leaves to aiohttp's responses. A list
# body stands for a stream of those chunks.
EXCHANGES = [
    (b"GET /a HTTP/1.1\r\nHost: x\r\n", (200, TEXT, b"hello"), True),
    (b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n", (200, TEXT, b"x"), True),
    (b"GET /a HTTP/1.1\r\nHost: x\r\n",
     (201, {"Content-Type": "application/json", "Set-Cookie": ["a=1", "b=2"]}, b'{"ok": 1}'), True),
    (b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n",
     (404, {**TEXT, "X-Name": "caf\u00e9"}, b"gone"), True),
    (b"GET /a HTTP/1.1\r\nHost: x\r\n", (200, {}, b""), True),
    (b"GET /a HTTP/1.1\r\nHost: x\r\n", (418, TEXT, b"tea"), True),
    (b"GET /a HTTP/1.1\r\nHost: x\r\n", (200, EVENTS, [b"data: 1\n\n", b"data: 2\n\n"]), True),
    (b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n", (200, EVENTS, [b"x"]), True),
    (b"GET /a HTTP/1.1\r\nHost: x\r\n", (200, EVENTS, []), True),
    (b"GET /a HTTP/1.1\r\nHost: x\r\n", (200, {}, b"no type"), True),
    (b"GET /a HTTP/1.1\r\nHost: x\r\n", (200, {"X-A": "1"}, [b"no type"]), True),
    (b"GET /a HTTP/1.1\r\nHost: x\r\n", (200, {**TEXT, "X-Count": 3}, b"n"), True),
    # Left to aiohttp's responses:
    (b"GET /a HTTP/1.1\r\nHost: x\r\n", (599, TEXT, b"odd"), False),
    (b"HEAD /a HTTP/1.1\r\nHost: x\r\n", (200, TEXT, b"hello"), False),
    (b"GET /a HTTP/1.0\r\nHost: x\r\n", (200, TEXT, b"old"), False),
    (b"GET /a HTTP/1.0\r\nHost: x\r\n", (200, EVENTS, [b"old"]), False),
    (b"GET /a HTTP/1.1\r\nHost: x\r\n", (204, {}, b""), False),
    (b"GET /a HTTP/1.1\r\nHost: x\r\n", (200, {**TEXT, "Date": "today"}, b"d"), False),
    (b"GET /a HTTP/1.1\r\nHost: x\r\n", (200, {**EVENTS, "Content-Length": "3"}, [b"abc"]), False),
]  # fmt: skip


def exchange(port: int, head: bytes) -> bytes:
    """Send one request; its response's bytes, the date masked, read to its end."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head + b"\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        top, _, rest = data.partition(b"\r\n\r\n")
        lines = top.split(b"\r\n")
        length = next((int(line[15:]) for line in lines if line.startswith(b"Content-Length")), 0)
        if head.startswith(b"HEAD"):
            length = 0
        chunked = b"Transfer-Encoding: chunked" in lines
        closes = head.startswith(b"GET /a HTTP/1.0") and not length
        while (not rest.endswith(b"0\r\n\r\n") if chunked else len(rest) < length) or closes:
            more = sock.recv(65536)
            if not more:
                break
            rest += more
    masked = [b"Date: *" if line.startswith(b"Date: ") else line for line in lines]
    return b"\r\n".join(masked) + b"\r\n\r\n" + rest


async def test_the_plain_case_goes_out_as_aiohttps_responses_would_write_it() -> None:
    responses = iter([response for _, response, _ in EXCHANGES] * 2)

    async def chunks(items: list[bytes]) -> AsyncIterator[bytes]:
        for item in items:
            yield item

    def respond(context: dict[str, Any]) -> dict[str, Any]:
        status, headers, body = next(responses)
        body = chunks(body) if isinstance(body, list) else body
        return {**context, "response": {"status": status, "headers": headers, "body": body}}

    async def aiohttp_writes(request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        status, headers, body = next(responses)
        pairs = [
            (k, str(v)) for k, vs in headers.items() for v in (vs if isinstance(vs, list) else [vs])
        ]
        if not isinstance(body, list):
            return aiohttp.web.Response(status=status, headers=pairs, body=body)
        stream = aiohttp.web.StreamResponse(status=status, headers=pairs)
        await stream.prepare(request)
        for chunk in body:
            await stream.write(chunk)
        await stream.write_eof()
        return stream

    server = aiohttp.web.Server(aiohttp_writes)
    runner = aiohttp.web.ServerRunner(server)
    await runner.setup()
    site = aiohttp.web.SockSite(runner, socket.create_server(("127.0.0.1", 0)))
    await site.start()
    reference = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    connector = create_connector(plain_map(Interceptor(name="respond", enter=respond)), None)
    handle = connector.handle
    writers = []

    async def observed(request: aiohttp.web.BaseRequest) -> Any:
        response = await handle(request)
        writers.append(not isinstance(response, aiohttp.web.StreamResponse))
        return response

    connector.handle = observed  # type: ignore[method-assign]
    connector.start()
    try:
        ours = [await asyncio.to_thread(exchange, connector.bound_port, h) for h, _, _ in EXCHANGES]
        theirs = [await asyncio.to_thread(exchange, reference, h) for h, _, _ in EXCHANGES]
    finally:
        connector.stop()
        await runner.cleanup()
    assert ours == theirs
    assert writers == [by_replkit for _, _, by_replkit in EXCHANGES]
    assert b"caf\xc3\xa9" in ours[3] and b"Connection: close" in ours[1]
    assert ours[6].endswith(b"data: 1\n\n\r\n9\r\ndata: 2\n\n\r\n0\r\n\r\n")
