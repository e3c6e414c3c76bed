"""replkit.connector: the map, the default interceptors, routing, start/stop/restart."""

from __future__ import annotations

import json
import logging
import socket
import sys
import types
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import Hammer, app_map, wait_until

from replkit import connector as conn
from replkit.aiohttp import AiohttpConnector, create_connector
from replkit.errors import ReplkitError
from replkit.routes import RouteError


def request(
    url: str, method: str = "GET", body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def echo(request: dict[str, Any]) -> dict[str, Any]:
    keys = ("path_params", "query_params", "json_params", "form_params")
    return {"status": 200, "body": json.dumps({k: request.get(k) for k in keys})}


def test_default_connector_map(monkeypatch: pytest.MonkeyPatch) -> None:
    assert conn.default_connector_map(8890) == {
        "host": "localhost",
        "port": 8890,
        "interceptors": [],
        "initial_context": {},
    }
    monkeypatch.setenv("REPLKIT_PORT", "9001")
    monkeypatch.setenv("REPLKIT_HOST", "127.0.0.1")
    assert conn.default_connector_map(8890)["port"] == 9001
    assert conn.default_connector_map(8890)["host"] == "127.0.0.1"
    monkeypatch.setenv("REPLKIT_PORT", "eighty")
    with pytest.raises(ReplkitError, match="REPLKIT_PORT='eighty' is not a port number"):
        conn.default_connector_map(8890)


def test_with_functions_return_new_maps() -> None:
    base = conn.default_connector_map(0)
    with_defaults = conn.with_default_interceptors(base)
    assert base["interceptors"] == [] and "secure_headers" not in base
    assert with_defaults["secure_headers"] == {}  # the connector's cue to add them everywhere
    names = [i.name for i in with_defaults["interceptors"]]
    assert names == [
        "replkit.http/log-request",
        "replkit.http/not-found",
        "replkit.http/content-type",
        "replkit.http/query-params",
        "replkit.http/body-params",
        "replkit.http/secure-headers",
    ]
    cors = conn.with_default_interceptors({**base, "allowed_origins": ["http://a.test"]})
    assert [i.name for i in cors["interceptors"]][:2] == [
        "replkit.http/log-request",
        "replkit.http/allow-origin",
    ]
    routed = conn.with_routes(with_defaults, {("/", "get", echo)})
    assert [i.name for i in routed["interceptors"]][-1] == "replkit.routes/router"


def test_a_bad_route_table_fails_when_building(serve: Callable[..., AiohttpConnector]) -> None:
    with pytest.raises(RouteError, match="gett"):
        conn.with_routes(conn.default_connector_map(0), {("/", "gett", echo)})


def test_default_interceptors_over_http(serve: Callable[..., AiohttpConnector]) -> None:
    connector = serve(
        {
            ("/echo/:id", "any", echo),
            ("/page.html", "get", lambda r: {"status": 200, "body": "<p>"}),
        }
    )
    status, headers, body = request(f"{connector.url}/echo/7?a=1&a=2&b=")
    assert status == 200
    assert json.loads(body)["path_params"] == {"id": "7"}
    assert json.loads(body)["query_params"] == {"a": ["1", "2"], "b": ""}
    assert headers["Content-Type"] == "text/plain; charset=UTF-8"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Strict-Transport-Security"].startswith("max-age=")

    _, _, body = request(
        f"{connector.url}/echo/1", "POST", b'{"x": [1]}', {"Content-Type": "application/json"}
    )
    assert json.loads(body)["json_params"] == {"x": [1]}
    _, _, body = request(
        f"{connector.url}/echo/1",
        "POST",
        b"k=v&k=w&z=1",
        {"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert json.loads(body)["form_params"] == {"k": ["v", "w"], "z": "1"}
    status, _, body = request(
        f"{connector.url}/echo/1", "POST", b"{nope", {"Content-Type": "application/json"}
    )
    assert status == 400 and body.startswith(b"malformed JSON body:")

    assert request(f"{connector.url}/page.html")[1]["Content-Type"] == "text/html; charset=UTF-8"
    status, headers, body = request(f"{connector.url}/missing")
    assert (status, body) == (404, b"Not Found")


# --- routes that change while serving ---------------------------------------------------


@pytest.fixture
def routes_module() -> Iterator[types.ModuleType]:
    """A module holding a ``routes`` table, and two ways to build a connector from it."""
    module = types.ModuleType("replkit_test_routes_module")
    sys.modules[module.__name__] = module
    source = (
        "from replkit import connector as conn\n"
        "from replkit.aiohttp import create_connector as hk_create\n"
        "routes = {('/', 'get', lambda r: {'status': 200, 'body': 'one'})}\n"
        "def create_connector(table):\n"
        "    m = conn.default_connector_map(0, '127.0.0.1')\n"
        "    m = conn.with_default_interceptors(m)\n"
        "    m = conn.with_routes(m, table)\n"
        "    return hk_create(m, {'shutdown_grace': 0.5})\n"
        "def fixed():\n"
        "    return create_connector(routes)\n"
        "def live():\n"
        "    return create_connector(lambda: routes)\n"
    )
    exec(compile(source, "<routes module>", "exec"), module.__dict__)
    yield module
    del sys.modules[module.__name__]


def test_routes_passed_as_a_function_follow_a_redefined_table(
    routes_module: types.ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    connector = routes_module.live().start()
    try:
        assert request(connector.url)[2] == b"one"
        routes_module.routes = {
            ("/", "get", lambda r: {"status": 200, "body": "two"}),
            ("/new", "get", lambda r: {"status": 200, "body": "added"}),
        }
        assert request(connector.url)[2] == b"two"
        assert request(f"{connector.url}/new")[2] == b"added"
        with caplog.at_level(logging.ERROR, logger="replkit.routes"):
            routes_module.routes = {("/", "gett", lambda r: {})}
            assert request(connector.url)[2] == b"two"
        assert "new routes rejected, still serving the previous ones" in caplog.text
    finally:
        connector.stop()


def test_a_table_is_fixed_when_the_connector_is_built(routes_module: types.ModuleType) -> None:
    connector = routes_module.fixed().start()
    try:
        routes_module.routes = {("/", "get", lambda r: {"status": 200, "body": "two"})}
        assert request(connector.url)[2] == b"one"
    finally:
        connector.stop()


def test_a_routes_function_is_called_per_request(serve: Callable[..., AiohttpConnector]) -> None:
    body = ["first"]
    table = {("/", "get", lambda r: {"status": 200, "body": body[0]})}
    connector = serve(app_map(lambda: table))
    assert request(connector.url)[2] == b"first"
    body[0] = "handlers are looked up afresh"
    assert request(connector.url)[2] == b"handlers are looked up afresh"


# --- start / stop / restart, REPL style --------------------------------------------------


@pytest.fixture
def make() -> Iterator[Callable[[str], AiohttpConnector]]:
    made: list[AiohttpConnector] = []
    port: list[int] = []

    def build(text: str) -> AiohttpConnector:
        table = {("/", "get", lambda r: {"status": 200, "body": text})}
        connector_map = conn.with_routes(
            conn.default_connector_map(port[0] if port else 0, "127.0.0.1"), table
        )
        connector = create_connector(connector_map, {"shutdown_grace": 0.5})
        made.append(connector)
        return connector

    def remember_port(connector: AiohttpConnector) -> AiohttpConnector:
        port.append(connector.bound_port)
        return connector

    build.remember_port = remember_port  # type: ignore[attr-defined]
    yield build
    for connector in made:
        if connector.running:
            conn.stop(connector)


def test_start_twice_prints_and_returns_the_running_one(
    make: Callable[..., AiohttpConnector], capsys: pytest.CaptureFixture[str]
) -> None:
    first = make.remember_port(conn.start(make("one")))  # type: ignore[attr-defined]
    second = conn.start(make("two"))
    assert second is first
    assert capsys.readouterr().out == (
        f"replkit: already serving on {first.url}; call restart() to reload it\n"
    )
    assert request(first.url)[2] == b"one"
    assert conn.serving() == [first]


def test_stop_when_stopped_prints_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    conn.stop(None)
    assert capsys.readouterr().out == "replkit: not running; nothing to stop\n"


def test_restart_on_the_same_port_never_refuses_a_request(
    make: Callable[..., AiohttpConnector],
) -> None:
    current = make.remember_port(conn.start(make("v0")))  # type: ignore[attr-defined]
    url = current.url
    with Hammer(lambda: request(url)[2]) as hammer:
        for i in range(1, 11):
            current = conn.restart(current, make(f"v{i}"))
            wait_until(lambda i=i: f"v{i}".encode() in hammer.answers)
    assert not hammer.failures
    assert conn.serving() == [current]


def test_restart_on_port_0_keeps_the_port(make: Callable[..., AiohttpConnector]) -> None:
    first = conn.start(make("one"))
    second = conn.restart(first, make("two"))  # asks for any free port: keeps the one it has
    assert second.current and not first.current
    assert second.bound_port == first.bound_port
    assert request(second.url)[2] == b"two"


def test_restart_to_another_port_stops_then_starts(make: Callable[..., AiohttpConnector]) -> None:
    first = make.remember_port(conn.start(make("one")))  # type: ignore[attr-defined]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        elsewhere = probe.getsockname()[1]
    table = {("/", "get", lambda r: {"status": 200, "body": "two"})}
    moved = create_connector(
        conn.with_routes(conn.default_connector_map(elsewhere, "127.0.0.1"), table), None
    )
    second = conn.restart(first, moved)
    try:
        assert not first.running and second.running
        assert second.bound_port == elsewhere
        assert request(second.url)[2] == b"two"
    finally:
        conn.stop(second)


def test_two_apps_on_port_0_do_not_collide(make: Callable[..., AiohttpConnector]) -> None:
    one, two = conn.start(make("one")), conn.start(make("two"))
    assert one.bound_port != two.bound_port
    assert (request(one.url)[2], request(two.url)[2]) == (b"one", b"two")
    assert conn.serving() == [one, two]


def test_an_address_override_moves_a_connector_and_keeps_its_free_port(
    make: Callable[..., AiohttpConnector],
) -> None:
    declared = ("127.0.0.1", 1)  # a map's port, never bound: the override moves it
    conn.override_address(declared, None, 0)
    try:
        table = {("/", "get", lambda r: {"status": 200, "body": "moved"})}

        def build() -> AiohttpConnector:
            return create_connector(
                conn.with_routes(conn.default_connector_map(1, "127.0.0.1"), table), None
            )

        first = conn.start(build())
        assert first.bound_port not in (0, 1)
        assert request(first.url)[2] == b"moved"
        conn.stop(first)
        again = conn.start(build())  # the free port chosen once is used again
        assert again.bound_port == first.bound_port
        conn.stop(again)
    finally:
        conn.override_address(declared, None, None)


def test_restart_when_stopped_starts(make: Callable[..., AiohttpConnector]) -> None:
    started = conn.restart(None, make("fresh"))
    assert started.running and request(started.url)[2] == b"fresh"
