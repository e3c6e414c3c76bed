"""replkit.connection: plain requests answered on replkit's own connection, everything else
handed, with its bytes, to aiohttp's protocol.

The servers are real (a connector on a free loopback port, and the same connector as an
aiohttp application on aiohttp's own server, for reference); the clients are raw sockets,
so that the bytes sent, pipelining and hand-overs are exactly what the test says.
"""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiohttp.web
import pytest
from conftest import wait_until

from replkit.aiohttp import AiohttpConnector
from replkit.application import ApplicationConnector
from replkit.connection import MAX_HEAD, SEND_LATER_MAX, Connection, plain_head


@pytest.mark.parametrize(
    ("head", "plain"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", ("/", {"host": "x"})),
        (
            b"GET /caf%C3%A9?a=1&b=%20 HTTP/1.1\r\nHost: x:8\r\nX-Two:  a  b \r\n\r\n",
            ("/caf%C3%A9?a=1&b=%20", {"host": "x:8", "x-two": "a  b"}),
        ),
        (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nEmpty:\r\n\r\n", None),
        (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", ("/", None)),
    ],
)
def test_a_plain_head_is_read_strictly(head: bytes, plain: Any) -> None:
    found = plain_head(head)
    assert found is not None
    if plain is not None:
        target, headers = plain
        assert found[0] == target
        if headers is not None:
            assert found[1] == headers


@pytest.mark.parametrize(
    "head",
    [
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n",
        b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.0\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",  # no Host
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nA: 2\r\n\r\n",  # a repeat
        b"GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\n folded\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nA: caf\xc3\xa9\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Name: 1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nA: \x00\r\n\r\n",
        b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /a#frag HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\nHost: x\n\n",
        b"\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"get / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n%s\r\n" % b"".join(b"X-%d: v\r\n" % i for i in range(100)),
    ],
)
def test_anything_else_is_left_to_aiohttp(head: bytes) -> None:
    assert plain_head(head) is None


def echo(request: dict[str, Any]) -> dict[str, Any]:
    """The request map, minus its body object, as JSON."""
    return {"status": 200, "body": {k: v for k, v in request.items() if k != "body"}}


async def read_body(request: dict[str, Any]) -> dict[str, Any]:
    return {"status": 200, "body": (await request["body"].read()).decode()}


DIGITS = b"0123456789" * (SEND_LATER_MAX // 2)


def sized(request: dict[str, Any]) -> dict[str, Any]:
    """``GET /sized?n=N``: the first N bytes of :data:`DIGITS`."""
    return {"status": 200, "body": DIGITS[: int(request["query_params"]["n"])]}


ROUTES = [("/echo", "get", echo), ("/echo", "post", read_body), ("/sized", "get", sized)]


def responses(sock: socket.socket, count: int) -> list[tuple[bytes, bytes]]:
    """Read ``count`` responses with a Content-Length: (head without Date, body) each."""
    data, found = b"", []
    while len(found) < count:
        while b"\r\n\r\n" not in data:
            more = sock.recv(65536)
            assert more, f"closed after {len(found)} responses"
            data += more
        head, _, data = data.partition(b"\r\n\r\n")
        lines = [line for line in head.split(b"\r\n") if not line.startswith(b"Date: ")]
        length = next(int(line[16:]) for line in lines if line.startswith(b"Content-Length: "))
        while len(data) < length:
            data += sock.recv(65536)
        found.append((b"\r\n".join(lines), data[:length]))
        data = data[length:]
    return found


def protocols(connector: AiohttpConnector) -> list[str]:
    """The kind of protocol each open connection of the connector's server has."""
    server = connector.server
    assert server is not None and server._runner is not None
    guarded = server._runner.server
    assert guarded is not None
    return sorted(type(protocol).__name__ for protocol in guarded._live)  # type: ignore[attr-defined]


def send_until_the_server_stops_reading(client: socket.socket, data: bytes) -> int:
    """Send ``data`` again and again until the socket takes nothing for half a second;
    how many bytes it took (the test fails if the server read them all for ten seconds)."""
    client.setblocking(False)
    sent, deadline, stalled_since = 0, time.monotonic() + 10, None
    while time.monotonic() < deadline:
        try:
            sent += client.send(data)
            stalled_since = None
        except BlockingIOError:
            stalled_since = stalled_since or time.monotonic()
            if time.monotonic() - stalled_since > 0.5:
                return sent
            select.select([], [client], [], 0.05)
    raise AssertionError(f"the server read all {sent} bytes")


def only_connection(connector: AiohttpConnector) -> Any:
    """The one connection open on the connector's server."""
    server = connector.server
    assert server is not None and server._runner is not None
    (connection,) = server._runner.server._live  # type: ignore[attr-defined]
    return connection


@pytest.fixture
def connector(serve: Callable[..., AiohttpConnector]) -> AiohttpConnector:
    return serve(ROUTES)


@pytest.fixture
def client(connector: AiohttpConnector) -> Iterator[socket.socket]:
    with socket.create_connection(("127.0.0.1", connector.bound_port), timeout=5) as sock:
        yield sock


GET = b"GET /echo?n=%d HTTP/1.1\r\nHost: localhost\r\nX-Many:  a, b \r\n\r\n"
POST = b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\nhello"


def test_a_connection_serves_plain_requests_until_one_is_not(
    connector: AiohttpConnector, client: socket.socket
) -> None:
    client.sendall(GET % 1)
    (first,) = responses(client, 1)
    assert json.loads(first[1])["query_string"] == "n=1"
    assert protocols(connector) == [Connection.__name__]

    client.sendall(POST)
    (second,) = responses(client, 1)
    assert second[1] == b"hello"
    assert protocols(connector) == ["_Protocol"]  # aiohttp's, from the POST on

    client.sendall(GET % 2)
    (third,) = responses(client, 1)
    assert json.loads(third[1])["query_string"] == "n=2"


def test_pipelined_requests_are_answered_in_order_across_the_hand_over(
    client: socket.socket,
) -> None:
    client.sendall(GET % 1 + GET % 2 + POST + GET % 3)

    got = responses(client, 4)

    bodies = [body if body == b"hello" else json.loads(body)["query_string"] for _, body in got]
    assert bodies == ["n=1", "n=2", b"hello", "n=3"]


@pytest.mark.parametrize(
    "head",
    [
        GET % 7,
        b"GET /echo HTTP/1.1\r\nHost: [::1]:8080\r\nUser-Agent: t\r\n\r\n",
        b"GET /echo?a=%C3%A9&&b HTTP/1.1\r\nHost: example.org\r\nConnection: close\r\n\r\n",
        b"GET /echo/../echo HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET //echo HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET /nowhere HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET /echo HTTP/1.1\r\nHost: bad host\r\n\r\n",
    ],
)
def test_a_plain_request_gets_what_aiohttps_protocol_would_give(
    connector: AiohttpConnector, head: bytes
) -> None:
    def answer(before: bytes) -> tuple[bytes, Any]:
        # After a POST, the connection is aiohttp's: the reference for the same request.
        with socket.create_connection(("127.0.0.1", connector.bound_port), timeout=5) as sock:
            sock.sendall(before + head)
            *_, (top, body) = responses(sock, 2 if before else 1)
        lines = [line for line in top.split(b"\r\n") if not line.startswith(b"Content-Sec")]
        found = json.loads(body) if body.startswith(b"{") else body
        if isinstance(found, dict):
            found.pop("csp_nonce")
        return b"\r\n".join(lines), found

    assert answer(b"") == answer(POST)


def test_an_idle_plain_connection_closes_after_the_keepalive_timeout(
    serve: Callable[..., AiohttpConnector],
) -> None:
    connector = serve(ROUTES, keepalive_timeout=0.3)
    with socket.create_connection(("127.0.0.1", connector.bound_port), timeout=5) as sock:
        sock.sendall(GET % 1)
        responses(sock, 1)
        assert protocols(connector) == [Connection.__name__]
        began = time.monotonic()

        assert sock.recv(1) == b""  # closed by the server

        assert 0.2 < time.monotonic() - began < 4


def test_a_keepalive_connection_follows_a_take_over_by_an_aiohttp_application(
    connector: AiohttpConnector, client: socket.socket
) -> None:
    async def hello(_request: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.Response(text="from the application")

    app = aiohttp.web.Application()
    app.router.add_get("/echo", hello)
    client.sendall(GET % 1)
    responses(client, 1)
    successor = ApplicationConnector(app, "127.0.0.1", 0, shutdown_grace=0.5)

    successor.take_over(connector)
    client.sendall(GET % 2)

    ((_, body),) = responses(client, 1)
    assert body == b"from the application"
    assert protocols(connector) == ["_Protocol"]


def test_connection_close_is_a_token_not_a_substring(client: socket.socket) -> None:
    head = b"GET /echo HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, x-notclose\r\n\r\n"
    client.sendall(head + head)

    got = responses(client, 2)

    assert not [top for top, _ in got if b"Connection: close" in top]


def test_a_client_pipelining_without_reading_fills_its_socket_not_the_server(
    connector: AiohttpConnector, client: socket.socket
) -> None:
    sent = send_until_the_server_stops_reading(client, (GET % 1) * 1000)
    connection = only_connection(connector)
    # At most a head's worth beyond what one read of the socket brings.
    assert len(connection._buffer) < MAX_HEAD + 300_000 < sent


def test_responses_of_every_size_leave_in_order_on_one_connection(
    client: socket.socket,
) -> None:
    # Small ones wait for the end of the loop's turn, larger ones are written at once.
    sizes = [10, SEND_LATER_MAX + 1, 0, SEND_LATER_MAX, 3 * SEND_LATER_MAX, 1] * 3
    client.sendall(b"".join(b"GET /sized?n=%d HTTP/1.1\r\nHost: h\r\n\r\n" % n for n in sizes))

    got = responses(client, len(sizes))

    assert [len(body) for _, body in got] == sizes
    assert all(body == DIGITS[: len(body)] for _, body in got)


def test_many_clients_at_once_each_get_their_own_answers(connector: AiohttpConnector) -> None:
    # Their answers leave together at the end of each turn of the loop: none is swapped.
    clients = [
        socket.create_connection(("127.0.0.1", connector.bound_port), timeout=5) for _ in range(40)
    ]
    try:
        for n, sock in enumerate(clients):
            sock.sendall(b"".join(GET % (n * 10 + i) for i in range(3)))
        for n, sock in enumerate(clients):
            got = [json.loads(body)["query_params"]["n"] for _, body in responses(sock, 3)]
            assert got == [str(n * 10 + i) for i in range(3)]
    finally:
        for sock in clients:
            sock.close()


def test_a_client_not_reading_its_answers_holds_back_the_next_request(
    connector: AiohttpConnector, client: socket.socket
) -> None:
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    # Answers small enough to wait for the end of the loop's turn, rather than be written
    # at once (whose request waits until the client takes them, as aiohttp's do).
    request = b"GET /sized?n=%d HTTP/1.1\r\nHost: h\r\n\r\n" % (SEND_LATER_MAX - 1000)
    sent = send_until_the_server_stops_reading(client, request * 50)
    connection = only_connection(connector)
    assert connection.transport is not None
    # What waits for the client: a few answers, not one per request it sent.
    asked = sent // len(request)
    assert connection.transport.get_write_buffer_size() < 8 * SEND_LATER_MAX
    assert asked > 20

    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    client.setblocking(True)
    # Reading lets the server go on.
    assert [len(body) for _, body in responses(client, 3)] == [SEND_LATER_MAX - 1000] * 3


def test_a_stream_that_breaks_ends_its_connection_before_the_next_request(
    serve: Callable[..., AiohttpConnector], caplog: pytest.LogCaptureFixture
) -> None:
    answered = []
    connector: AiohttpConnector

    async def breaking(_request: dict[str, Any]) -> dict[str, Any]:
        async def chunks() -> AsyncIterator[bytes]:
            # Until some of it waits in the transport for a client that is not reading: the
            # connection closes only once that is sent.
            transport = only_connection(connector).transport
            for _ in range(100_000):
                if transport.get_write_buffer_size():
                    break
                yield b": padding\n" * 100
            raise RuntimeError("the producer broke")

        return {"status": 200, "headers": {"Content-Type": "text/event-stream"}, "body": chunks()}

    def counted(request: dict[str, Any]) -> dict[str, Any]:
        answered.append(request["uri"])
        return {"status": 200, "body": "late"}

    connector = serve([("/breaking", "get", breaking), ("/next", "get", counted)])
    with socket.create_connection(("127.0.0.1", connector.bound_port), timeout=5) as sock:
        sock.sendall(
            b"GET /breaking HTTP/1.1\r\nHost: h\r\n\r\nGET /next HTTP/1.1\r\nHost: h\r\n\r\n"
        )
        wait_until(lambda: "the producer broke" in caplog.text, what="the stream to break")
        data = b""
        while more := sock.recv(65536):  # until the server closes the connection
            data += more

    assert data.startswith(b"HTTP/1.1 200 OK") and b"late" not in data
    assert answered == []  # the pipelined request was never started


def test_a_busy_connection_outlives_the_keepalive_timeout_and_an_idle_one_does_not(
    serve: Callable[..., AiohttpConnector],
) -> None:
    connector = serve(ROUTES, keepalive_timeout=0.3)
    with socket.create_connection(("127.0.0.1", connector.bound_port), timeout=5) as sock:
        began = time.monotonic()
        n = 0
        while time.monotonic() - began < 1.0:  # three timeouts' worth of requests
            sock.sendall(GET % n)
            responses(sock, 1)
            n += 1
        idle_from = time.monotonic()

        assert sock.recv(1) == b""  # then idle: closed by the server

        assert 0.2 < time.monotonic() - idle_from < 4


def test_at_the_connection_cap_a_half_sent_head_makes_room_for_a_new_client(
    serve: Callable[..., AiohttpConnector],
) -> None:
    connector = serve(ROUTES, max_connections=3)
    slow = [socket.create_connection(("127.0.0.1", connector.bound_port)) for _ in range(3)]
    try:
        for sock in slow:
            sock.sendall(b"GET /echo HTTP/1.1\r\n")
        wait_until(lambda: len(protocols(connector)) == 3, what="3 connections open")

        with socket.create_connection(("127.0.0.1", connector.bound_port), timeout=5) as sock:
            sock.sendall(GET % 1)
            assert len(responses(sock, 1)) == 1
    finally:
        for sock in slow:
            sock.close()


def test_a_head_handed_over_keeps_the_deadline_it_started(
    serve: Callable[..., AiohttpConnector],
) -> None:
    connector = serve(ROUTES, header_timeout=1.0)
    with socket.create_connection(("127.0.0.1", connector.bound_port), timeout=5) as sock:
        began = time.monotonic()
        sock.sendall(b"GET /echo HTTP/1.1\r\n")
        time.sleep(0.5)  # a slow client: the rest of its head comes later
        sock.sendall(b"".join(b"X-%d: %s\r\n" % (i, b"v" * 900) for i in range(10)))  # > MAX_HEAD

        assert sock.recv(1) == b""  # closed

        assert time.monotonic() - began < 1.4  # not 1.5 s: the clock started at the first byte
