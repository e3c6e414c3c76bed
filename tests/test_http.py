"""replkit.http against a real server: JSON, methods, cookies, static files, CORS, limits,
secure headers on every response, the access log, and pages in a real browser."""

from __future__ import annotations

import json
import logging
import re
import socket
import subprocess
import urllib.request
from collections.abc import Callable
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, Process, app_map, replkit_command, run_python, served_url, wait_until
from test_connector import request

from replkit import http
from replkit.aiohttp import AiohttpConnector
from replkit.errors import ReplkitError

Serve = Callable[..., AiohttpConnector]


def echo(req: dict[str, Any]) -> dict[str, Any]:
    keys = ("json_params", "form_params", "query_params")
    return {"status": 200, "body": {key: req.get(key) for key in keys}}


def raw(url: str, data: bytes, read_until: bytes = b"\r\n\r\n", timeout: float = 5) -> bytes:
    """Send ``data`` as is on a fresh connection; what came back up to ``read_until``."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        while read_until not in received:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        return received


SECURE = ("X-Frame-Options", "X-Content-Type-Options", "Content-Security-Policy")


def assert_secure(headers: dict[str, str]) -> None:
    missing = [name for name in SECURE if name not in headers]
    assert not missing, f"missing secure headers {missing} in {headers}"


# --- JSON, forms and query params ---------------------------------------------------------


def test_json_in_and_out(serve: Serve) -> None:
    connector = serve(
        [("/echo", "post", echo), ("/list", "get", lambda r: {"status": 201, "body": [1, "é"]})]
    )
    status, headers, body = request(
        f"{connector.url}/echo?q=1", "POST", b'{"x": [1, 2]}', {"Content-Type": "application/json"}
    )
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(body) == {
        "json_params": {"x": [1, 2]},
        "form_params": None,
        "query_params": {"q": "1"},
    }
    status, headers, body = request(f"{connector.url}/list")
    assert (status, headers["Content-Type"], json.loads(body)) == (
        201,
        "application/json",
        [1, "é"],
    )

    _, _, body = request(
        f"{connector.url}/echo", "POST", b'{"a": 1}', {"Content-Type": "application/vnd.api+json"}
    )
    assert json.loads(body)["json_params"] == {"a": 1}


@pytest.mark.parametrize(
    ("content_type", "payload", "reason"),
    [
        (
            "application/json",
            b"{nope",
            "malformed JSON body: Expecting property name enclosed in double quotes: "
            "line 1 column 2 (char 1)",
        ),
        ("application/json", b"\xff\xfe{", "malformed JSON body: not UTF-8"),
        (
            "application/json",
            b"[" * 100_000 + b"]" * 100_000,
            "malformed JSON body: nested too deeply",
        ),
        ("application/x-www-form-urlencoded", b"a=\xff", "malformed form body: not UTF-8"),
        (
            "application/x-www-form-urlencoded",
            b"&".join(b"k%d=v" % i for i in range(http.MAX_FORM_FIELDS + 1)),
            f"form body has more than {http.MAX_FORM_FIELDS} fields",
        ),
    ],
)
def test_a_malformed_body_is_a_400_with_a_one_line_reason(
    serve: Serve, content_type: str, payload: bytes, reason: str
) -> None:
    connector = serve([("/echo", "post", echo)])
    status, headers, body = request(
        f"{connector.url}/echo", "POST", payload, {"Content-Type": content_type}
    )
    assert (status, body.decode()) == (400, reason)
    assert_secure(headers)


def test_forms_and_bodies_left_to_the_handler(serve: Serve) -> None:
    async def upload(req: dict[str, Any]) -> dict[str, Any]:
        return {"status": 200, "body": await req["body"].read()}

    connector = serve([("/echo", "post", echo), ("/upload", "put", upload)])
    _, _, body = request(
        f"{connector.url}/echo",
        "POST",
        b"k=v&k=w&z=1&e=",
        {"Content-Type": "application/x-www-form-urlencoded; charset=UTF-8"},
    )
    assert json.loads(body)["form_params"] == {"k": ["v", "w"], "z": "1", "e": ""}
    _, _, body = request(f"{connector.url}/echo", "POST", b"", {"Content-Type": "application/json"})
    assert json.loads(body)["json_params"] is None  # an empty body adds no key
    assert request(f"{connector.url}/upload", "PUT", b"\x00raw")[2] == b"\x00raw"


def test_the_body_limit_is_configurable_and_a_413(serve: Serve) -> None:
    async def upload(req: dict[str, Any]) -> dict[str, Any]:
        return {"status": 200, "body": str(len(await req["body"].read()))}

    connector = serve([("/echo", "post", echo), ("/upload", "post", upload)], max_body_size=100)
    assert request(f"{connector.url}/upload", "POST", b"x" * 100)[2] == b"100"
    for path in ("/upload", "/echo"):
        status, headers, body = request(
            f"{connector.url}{path}",
            "POST",
            b'"' + b"x" * 200 + b'"',
            {"Content-Type": "application/json"},
        )
        assert (status, body) == (413, b"request body larger than 100 bytes")
        assert_secure(headers)
    # Chunked, so no Content-Length tells in advance: the limit holds while reading.
    chunked = b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunked += b"c8\r\n" + b"x" * 200 + b"\r\n0\r\n\r\n"
    assert raw(connector.url, chunked).startswith(b"HTTP/1.1 413 ")
    with pytest.raises(ReplkitError, match="max_body_size must be a positive number of bytes"):
        serve([("/echo", "post", echo)], max_body_size="1M")


def test_expect_100_continue_is_answered_when_the_body_is_wanted(serve: Serve) -> None:
    connector = serve([("/echo", "post", echo)], max_body_size=1000)
    head = (
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n"
    )
    host, port = connector.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(head % 7)
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"  # before a byte of body
        sock.sendall(b'{"a":1}')
        assert b'"json_params": {"a": 1}' in sock.recv(65536)
    # Too large, or nobody asks for it: the final answer comes at once, no 100.
    assert raw(connector.url, head % 5000).startswith(b"HTTP/1.1 413 ")
    assert raw(connector.url, (head % 7).replace(b"/echo", b"/nowhere")).startswith(
        b"HTTP/1.1 404 "
    )


# --- methods, headers, cookies ------------------------------------------------------------


def test_405_head_and_options(serve: Serve) -> None:
    page = lambda r: {"status": 200, "body": "<p>hello</p>"}  # noqa: E731
    connector = serve(
        [
            ("/page.html", "get", page),
            ("/items", "post", echo, "add"),
            ("/items", "delete", echo, "clear"),
        ]
    )
    status, headers, body = request(f"{connector.url}/page.html", "PUT")
    assert (status, headers["Allow"], body) == (405, "GET, HEAD, OPTIONS", b"Method Not Allowed")
    assert request(f"{connector.url}/items")[1]["Allow"] == "POST, DELETE, OPTIONS"

    status, headers, body = request(f"{connector.url}/page.html", "HEAD")
    assert (status, headers["Content-Length"], body) == (200, "12", b"")
    assert headers["Content-Type"] == "text/html; charset=UTF-8"

    status, headers, body = request(f"{connector.url}/items", "OPTIONS")
    assert (status, headers["Allow"], body) == (204, "POST, DELETE, OPTIONS", b"")
    assert request(f"{connector.url}/elsewhere", "OPTIONS")[0] == 404


def test_a_list_header_is_one_line_per_value_and_two_cookies_are_kept(serve: Serve) -> None:
    def login(_: dict[str, Any]) -> dict[str, Any]:
        cookies = ["session=abc; Path=/; HttpOnly", "theme=dark; Path=/"]
        return {"status": 200, "headers": {"Set-Cookie": cookies}, "body": "in"}

    connector = serve([("/login", "get", login)])
    jar = CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    with opener.open(f"{connector.url}/login", timeout=5) as response:
        assert response.headers.get_all("Set-Cookie") == [
            "session=abc; Path=/; HttpOnly",
            "theme=dark; Path=/",
        ]
    assert {cookie.name: cookie.value for cookie in jar} == {"session": "abc", "theme": "dark"}


def test_a_header_with_a_line_break_is_never_sent(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    injected = lambda r: {"status": 200, "headers": {"X-A": "1\r\nSet-Cookie: evil=1"}}  # noqa: E731
    connector = serve([("/", "get", injected)])
    with caplog.at_level(logging.ERROR, logger="replkit.server"):
        status, headers, _ = request(connector.url)
    assert status == 500 and "evil" not in str(headers)
    assert "has CR, LF or NUL" in caplog.text


# --- static files -------------------------------------------------------------------------


@pytest.fixture
def site(tmp_path: Path) -> Path:
    public = tmp_path / "public"
    (public / "js").mkdir(parents=True)
    (public / "hello.txt").write_text("hello, static world\n")
    (public / "js" / "app.js").write_text("console.log('app')\n")
    (public / ".env").write_text("SECRET=inside\n")
    (tmp_path / "secret.txt").write_text("SECRET=outside\n")
    (public / "out").symlink_to(tmp_path / "secret.txt")
    (public / "outdir").symlink_to(tmp_path)
    (public / "alias.txt").symlink_to(public / "hello.txt")
    return public


def curl(*args: str) -> tuple[int, bytes]:
    result = subprocess.run(
        ["curl", "-s", "-o", "-", "-w", "\n%{http_code}", *args],
        capture_output=True,
        timeout=10,
        check=True,
    )
    body, _, code = result.stdout.rpartition(b"\n")
    return int(code), body


TRAVERSALS = [
    "/static/../secret.txt",
    "/static/../../../../etc/hostname",
    "/static/js/../../secret.txt",
    "/static/..%2fsecret.txt",
    "/static/..%2F..%2F..%2Fetc%2Fhostname",
    "/static/%2e%2e/secret.txt",
    "/static/%2E%2E%2Fsecret.txt",
    "/static/.%2e/secret.txt",
    "/static/%2fetc%2fhostname",
    "/static//etc/hostname",
    "/static/hello.txt%00.js",
    "/static/out",
    "/static/outdir/secret.txt",
    "/static/.env",
    "/static/js",
    "/static/",
    "/static/missing.txt",
]


def test_static_files_never_leave_their_directory(serve: Serve, site: Path) -> None:
    connector = serve([("/static/*path", "get", http.static_files(site))])
    for path in TRAVERSALS:
        code, body = curl("--path-as-is", f"{connector.url}{path}")
        assert (code, body) == (404, b"Not Found"), path
    assert curl(f"{connector.url}/static/alias.txt") == (200, b"hello, static world\n")


def test_static_files_send_files_with_etag_ranges_and_head(serve: Serve, site: Path) -> None:
    connector = serve([("/static/*path", "get", http.static_files(site))])
    url = f"{connector.url}/static/hello.txt"
    status, headers, body = request(url)
    assert (status, body) == (200, b"hello, static world\n")
    assert headers["Etag"] and headers["Last-Modified"] and headers["Accept-Ranges"] == "bytes"
    assert headers["Content-Type"].startswith("text/plain")
    assert_secure(headers)
    assert request(url, headers={"If-None-Match": headers["Etag"]})[0] == 304
    status, headers, body = request(url, headers={"Range": "bytes=7-12"})
    assert (status, headers["Content-Range"], body) == (206, "bytes 7-12/20", b"static")
    status, headers, body = request(url, "HEAD")
    assert (status, headers["Content-Length"], body) == (200, "20", b"")
    js_type = request(f"{connector.url}/static/js/app.js")[1]["Content-Type"]
    assert js_type.endswith("/javascript")  # what nosniff lets a browser run


def test_static_files_wants_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ReplkitError, match=r"static_files: .* is not a directory"):
        http.static_files(tmp_path / "nope")


# --- CORS ---------------------------------------------------------------------------------


def test_cors_without_and_with_credentials(serve: Serve) -> None:
    routes = [("/", "get", echo), ("/items", "put", echo), ("/items", "delete", echo, "del")]
    plain_cors = serve(routes, allowed_origins=["http://ok.test"])
    _, headers, _ = request(plain_cors.url, headers={"Origin": "http://ok.test"})
    assert headers["Access-Control-Allow-Origin"] == "http://ok.test"
    assert "Access-Control-Allow-Credentials" not in headers
    assert headers["Vary"] == "Origin"
    assert "Access-Control-Allow-Origin" not in request(plain_cors.url)[1]

    creds = serve(
        routes,
        allowed_origins={
            "allowed_origins": ["http://ok.test"],
            "creds": True,
            "max_age": 60,
            "allowed_headers": ["Content-Type", "X-Token"],
        },
    )
    _, headers, _ = request(creds.url, headers={"Origin": "http://ok.test"})
    assert headers["Access-Control-Allow-Credentials"] == "true"
    status, headers, _ = request(
        f"{creds.url}/items",
        "OPTIONS",
        headers={"Origin": "http://ok.test", "Access-Control-Request-Method": "PUT"},
    )
    assert status == 204
    assert headers["Access-Control-Allow-Methods"] == "PUT, DELETE, OPTIONS"
    assert headers["Access-Control-Allow-Headers"] == "Content-Type, X-Token"
    assert headers["Access-Control-Max-Age"] == "60"
    assert headers["Access-Control-Allow-Origin"] == "http://ok.test"


def test_cors_refusals_any_origin_and_same_origin(serve: Serve) -> None:
    listed = serve([("/", "get", echo)], allowed_origins=["http://ok.test"])
    status, headers, body = request(listed.url, headers={"Origin": "http://evil.test"})
    assert (status, body) == (403, b"origin not allowed")
    assert_secure(headers)
    # The app's own pages send Origin too (a POST from its form): never refused.
    own = listed.url.replace("127.0.0.1", "localhost")
    assert request(listed.url, headers={"Origin": listed.url})[0] == 200
    assert (
        request(listed.url, headers={"Origin": own, "Host": own.removeprefix("http://")})[0] == 200
    )

    anyone = serve([("/", "get", echo)], allowed_origins="*")
    _, headers, _ = request(anyone.url, headers={"Origin": "http://whoever.test"})
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in headers and "Vary" not in headers
    with pytest.raises(ReplkitError, match="browsers refuse credentials for any origin"):
        http.allow_origin({"allowed_origins": "*", "creds": True})
    with pytest.raises(ReplkitError, match=r"unknown keys \['credentials'\]"):
        http.allow_origin({"allowed_origins": ["http://a.test"], "credentials": True})


# --- every response replkit writes --------------------------------------------------------


def test_secure_headers_on_errors_and_refusals_and_overridable(serve: Serve) -> None:
    def boom(_: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("bug")

    connector = serve([("/boom", "get", boom)])
    assert_secure(request(f"{connector.url}/boom")[1])  # a 500 made outside the chain
    assert_secure(request(connector.url, headers={"Host": "x:99999"})[1])
    bad_line = raw(connector.url, b"GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n")  # aiohttp's own 400
    assert bad_line.startswith(b"HTTP/1.0 400 ") and b"X-Frame-Options: DENY" in bad_line

    strict = serve(
        [("/", "get", echo)],
        secure_headers={"Content-Security-Policy": http.PEDESTAL_CSP, "X-Download-Options": None},
    )
    headers = request(strict.url)[1]
    assert headers["Content-Security-Policy"] == http.PEDESTAL_CSP
    assert "X-Download-Options" not in headers
    with pytest.raises(ReplkitError, match="secure_headers: 'X-A'"):
        serve([("/", "get", echo)], secure_headers={"X-A": "1\r\n2"})


def test_nonces_are_never_repeated_not_even_by_a_forked_child() -> None:
    seen = {http.new_nonce() for _ in range(3 * 256 + 7)}  # across several reads
    assert len(seen) == 3 * 256 + 7
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{24}", nonce) for nonce in seen)
    # A worker forked now must not hand out the nonces its parent still holds.
    script = (
        "import os, sys; from replkit import http\n"
        "http.new_nonce()\n"
        "r, w = os.pipe()\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os.write(w, ' '.join(http.new_nonce() for _ in range(5)).encode()); os._exit(0)\n"
        "os.waitpid(pid, 0)\n"
        "child = set(os.read(r, 1000).decode().split())\n"
        "parent = {http.new_nonce() for _ in range(5)}\n"
        "print(len(child), len(parent), len(child & parent))\n"
    )
    out = run_python(script)
    assert out.stdout.split() == ["5", "5", "0"], out.stderr


def test_secure_headers_keep_their_order_whatever_carries_the_nonce() -> None:
    overrides = {"X-Frame-Options": None, "X-Nonce-Too": "a {nonce} b {nonce}", "X-Last": "z"}
    values = http.secure_header_values(overrides, nonce="N")
    assert list(values) == [
        *(name for name in http.SECURE_HEADERS if name != "X-Frame-Options"),
        "X-Nonce-Too",
        "X-Last",
    ]
    assert values["X-Nonce-Too"] == "a N b N"
    assert values["Content-Security-Policy"] == http.DEFAULT_CSP.replace("{nonce}", "N")


def test_a_secure_header_the_response_sets_is_kept_in_its_own_spelling(serve: Serve) -> None:
    def framed(_: dict[str, Any]) -> dict[str, Any]:
        return {"status": 200, "headers": {"x-frame-options": "SAMEORIGIN"}, "body": "ok"}

    def plain_page(_: dict[str, Any]) -> dict[str, Any]:
        return {"status": 200, "headers": {"X-Mine": "1"}, "body": "ok"}

    connector = serve([("/framed", "get", framed), ("/plain", "get", plain_page)])
    head = raw(connector.url, b"GET /framed HTTP/1.1\r\nHost: x\r\n\r\n").lower()
    assert head.count(b"x-frame-options:") == 1 and b"x-frame-options: sameorigin" in head
    assert b"x-content-type-options: nosniff" in head
    # The response's own headers first, then the secure ones in their table's order.
    lines = raw(connector.url, b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n").split(b"\r\n")
    names = [line.split(b":")[0] for line in lines[1:] if b":" in line]
    secure = [name.encode() for name in http.SECURE_HEADERS]
    assert [n for n in names if n == b"X-Mine" or n in secure] == [b"X-Mine", *secure]


def test_a_bad_host_is_a_400_not_a_traceback(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    connector = serve([("/", "get", echo)])
    with caplog.at_level(logging.INFO):
        for host in ("x:99999", "a b", "[::1", "user@host"):
            status, _, body = request(connector.url, headers={"Host": host})
            assert (status, body) == (400, f"bad Host header {host!r}".encode())
        assert request(connector.url, headers={"Host": "[::1]:8890"})[0] == 200
    assert "Traceback" not in caplog.text


def test_a_request_error_raised_by_a_handler_is_its_status(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    def teapot(_: dict[str, Any]) -> dict[str, Any]:
        raise http.RequestError(418, "short and stout")

    connector = serve([("/", "get", teapot)])
    with caplog.at_level(logging.ERROR):
        status, headers, body = request(connector.url)
    assert (status, body) == (418, b"short and stout")
    assert_secure(headers)
    assert not caplog.records


def test_the_access_log_has_status_and_duration(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    connector = serve([("/", "get", echo)], allowed_origins=["http://ok.test"])
    with caplog.at_level(logging.INFO, logger="replkit.access"):
        request(f"{connector.url}/?q=1")
        request(connector.url, headers={"Origin": "http://evil.test"})
        request(f"{connector.url}/missing", "POST")

        def logged() -> list[str]:
            return [r.getMessage() for r in caplog.records if r.name == "replkit.access"]

        # aiohttp logs a response once it is written: a moment after the client has it.
        lines = wait_until(lambda: len(logged()) == 3 and logged(), what="three access lines")
    assert [line.rsplit(" ", 2)[0] for line in lines] == [
        "127.0.0.1 GET /?q=1 200",
        "127.0.0.1 GET / 403",
        "127.0.0.1 POST /missing 404",
    ]
    assert all(line.endswith(" ms") and float(line.split()[-2]) >= 0 for line in lines)

    caplog.clear()
    quiet = serve([("/", "get", echo)], access_log=False)
    with caplog.at_level(logging.INFO, logger="replkit.access"):
        request(quiet.url)
    assert not [r for r in caplog.records if r.name == "replkit.access"]


# --- pages in a real browser --------------------------------------------------------------


def browser(url: str, until: str) -> list[str]:
    """What Chromium logs on the console at ``url``, until a line contains ``until``."""
    result = subprocess.run(
        ["node", str(ROOT / "tests/js/browser-console.mjs"), url, until],
        capture_output=True,
        text=True,
        timeout=40,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return [json.loads(line).get("console", "") for line in result.stdout.splitlines()]


def nonce_page(req: dict[str, Any]) -> dict[str, Any]:
    body = f'<!doctype html><script nonce="{req["csp_nonce"]}">console.log("inline ran")</script>'
    return {"status": 200, "body": body, "headers": {"Content-Type": "text/html; charset=UTF-8"}}


def file_page(_: dict[str, Any]) -> dict[str, Any]:
    body = '<!doctype html><script src="/static/js/app.js"></script>'
    return {"status": 200, "body": body, "headers": {"Content-Type": "text/html; charset=UTF-8"}}


def test_pages_run_their_scripts_in_chromium_under_the_default_headers(
    serve: Serve, site: Path
) -> None:
    routes = [
        ("/inline", "get", nonce_page),
        ("/file", "get", file_page),
        ("/static/*path", "get", http.static_files(site)),
    ]
    connector = serve(routes)
    assert "inline ran" in browser(f"{connector.url}/inline", "inline ran")
    assert "app" in browser(f"{connector.url}/file", "app")

    strict = serve(routes, secure_headers={"Content-Security-Policy": http.PEDESTAL_CSP})
    logged = browser(f"{strict.url}/inline", "Content Security Policy")
    assert "inline ran" not in logged  # the opt-in Pedestal policy still blocks them


def test_the_default_interceptors_describe_themselves() -> None:
    for name in (
        "log_request",
        "not_found",
        "content_type",
        "query_params",
        "body_params",
        "secure_headers",
    ):
        value = getattr(http, name)
        assert value.__doc__ and value.__doc__ != type(value).__doc__, name
    assert 'request["csp_nonce"]' in http.secure_headers.__doc__
    assert "Vary: Origin" in (http.allow_origin(["http://a.test"]).__doc__ or "")


def test_with_default_interceptors_checks_its_keys() -> None:
    with pytest.raises(ReplkitError, match="allowed_origins 42: expected"):
        app_map([("/", "get", echo)], allowed_origins=42)


def test_replkit_serve_logs_every_response(spawn: Callable[..., Process]) -> None:
    process = spawn(*replkit_command("serve", "app.sse_demo", "--port", "0", "--no-watch"))
    url = served_url(process.next_line())
    assert request(f"{url}/")[0] == 200
    assert request(f"{url}/nope", "POST")[0] == 404
    assert request(f"{url}/", "DELETE")[0] == 405

    def access_lines() -> list[str]:
        return [line for line in process.stderr_lines if "replkit.access" in line]

    lines = wait_until(lambda: len(access_lines()) == 3 and access_lines(), what="3 lines")
    pattern = (
        r"INFO replkit\.access: 127\.0\.0\.1 (GET /|POST /nope|DELETE /) (200|404|405) [\d.]+ ms"
    )
    assert all(re.fullmatch(pattern, line) for line in lines), lines
