"""replkit.testing: the guide's app under aiohttp's TestClient and under blocking clients."""

from __future__ import annotations

import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import server_threads, wait_until

import app.sse_demo as sse_demo
from replkit import connector as conn
from replkit import testing
from replkit.errors import ReplkitError
from replkit.server import Connector


async def test_the_client_serves_on_the_tests_own_loop() -> None:
    async with testing.client(sse_demo.create_connector()) as client:
        assert not server_threads()  # no thread: the server runs on this loop
        assert client.host == "127.0.0.1" and client.port not in (None, 8890)
        response = await client.get("/")
        assert (response.status, await response.text()) == (200, "Hello, World!")
        assert response.headers["X-Frame-Options"] == "DENY"
        async with client.get("/counter") as stream:
            assert await stream.content.readuntil(b"\n\n") == b"event: counter\ndata: 0\n\n"
        port = client.port
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


async def test_the_client_keeps_cookies_and_takes_route_tables() -> None:
    def login(_: dict[str, Any]) -> dict[str, Any]:
        return {"status": 200, "headers": {"Set-Cookie": ["a=1; Path=/", "b=2; Path=/"]}}

    def whoami(request: dict[str, Any]) -> dict[str, Any]:
        return {"status": 200, "body": {"cookie": request["headers"].get("cookie")}}

    async with testing.client([("/login", "post", login), ("/me", "get", whoami)]) as client:
        await client.post("/login")
        response = await client.get("/me")
        assert await response.json() == {"cookie": "a=1; b=2"}


def test_serve_is_for_blocking_clients() -> None:
    with testing.serve(sse_demo.routes) as server:
        with urllib.request.urlopen(server.url, timeout=5) as response:
            assert response.read() == b"Hello, World!"
        curl = subprocess.run(["curl", "-s", f"{server.url}/"], capture_output=True, timeout=10)
        assert curl.stdout == b"Hello, World!"
    assert not server.running
    wait_until(lambda: not server_threads(), what="the replkit-server thread to end")


async def test_serve_from_an_async_test_does_not_use_its_loop() -> None:
    with testing.serve(sse_demo.routes) as server:
        assert server_threads()  # served from the background thread, not this loop
        with urllib.request.urlopen(f"{server.url}/", timeout=5) as response:
            assert response.status == 200


@pytest.fixture
def served_map() -> Iterator[Connector]:
    """The fixture shape for a suite: one app per test, stopped afterwards."""
    connector_map = conn.default_connector_map(8890) | {"access_log": False}
    connector_map = conn.with_routes(
        conn.with_default_interceptors(connector_map),
        [("/", "get", lambda r: {"status": 200, "body": r["server_name"]})],
    )
    with testing.serve(connector_map) as server:
        yield server


def test_a_connector_map_moves_to_a_free_loopback_port(served_map: Connector) -> None:
    assert served_map.host == "127.0.0.1" and served_map.bound_port != 8890
    with urllib.request.urlopen(served_map.url, timeout=5) as response:
        assert response.read() == b"127.0.0.1"


def test_a_running_connector_is_refused() -> None:
    with (
        testing.serve(sse_demo.routes) as server,
        pytest.raises(ReplkitError, match="already running"),
    ):
        testing.connector_for(server)
