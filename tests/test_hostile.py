"""Hostile and broken clients against ``replkit serve`` in a process of its own.

The server runs in a child process so that its sockets and the clients' do not share one
file descriptor table; the clients raise this process's descriptor limit for themselves.
Every wait polls with a deadline; the only timing asserted is the issue's "a normal
client is served within a second".
"""

from __future__ import annotations

import asyncio
import errno
import gzip
import http.client
import os
import resource
import socket
import textwrap
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from conftest import Process, replkit_command, served_url, wait_until

APP = '''
import os
from replkit import connector as conn, interceptor, sse
from replkit.aiohttp import create_connector as hk_create

started = []
hogged = []


def stream_ready(channel, context):
    started.append(1)
    channel.put({"name": "tick", "data": 1})


def hog(request):
    """Take every free file descriptor for a while: an app leaking them."""
    import asyncio
    try:
        while True:
            hogged.append(os.open("/dev/null", os.O_RDONLY))
    except OSError:
        pass
    asyncio.get_running_loop().call_later(float(request["query_string"]), release)
    return {"status": 200, "body": str(len(hogged))}


def release():
    while hogged:
        os.close(hogged.pop())


counter = interceptor.interceptor(
    {"name": "counter", "enter": lambda ctx: sse.start_stream(stream_ready, ctx, None)}
)
routes = {
    ("/", "get", lambda r: {"status": 200, "body": "ok"}),
    ("/counter", "get", counter),
    ("/started", "get", lambda r: {"status": 200, "body": str(len(started))}),
    ("/echo", "post", lambda r: {"status": 200, "body": {"json": r.get("json_params")}}),
    ("/hog", "get", hog),
}


def create_connector():
    connector_map = conn.default_connector_map(0, "127.0.0.1") | {
        "header_timeout": HEADER_TIMEOUT,
        "keepalive_timeout": 3,
        "max_connections": 1000,
    }
    connector_map = conn.with_default_interceptors(connector_map)
    connector_map = conn.with_routes(connector_map, routes)
    return hk_create(connector_map, {"shutdown_grace": 0.5})
'''

HEADER_TIMEOUT = 2


@dataclass
class Served:
    """The child process serving the hostile app, and what the tests read from it."""

    process: Process
    url: str

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @property
    def pid(self) -> int:
        return self.process.proc.pid

    def status(self, field: str) -> int:
        """A ``/proc/PID/status`` figure (VmRSS, VmHWM: kB)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
        raise AssertionError(f"no {field} in /proc/{self.pid}/status")

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def log(self) -> str:
        return "\n".join(self.process.stderr_lines)

    def get(self, path: str = "/", timeout: float = 10) -> tuple[int, bytes, float]:
        """A normal client: status, body, and how long it took."""
        began = time.monotonic()
        with urllib.request.urlopen(f"{self.url}{path}", timeout=timeout) as response:
            return response.status, response.read(), time.monotonic() - began


@pytest.fixture
def served(spawn: Callable[..., Process], tmp_path: Path) -> Served:
    (tmp_path / "hostile_app.py").write_text(
        textwrap.dedent(APP).replace("HEADER_TIMEOUT", str(HEADER_TIMEOUT))
    )
    process = spawn(*replkit_command("serve", "hostile_app", "--no-watch"), cwd=tmp_path)
    return Served(process, served_url(process.next_line()))


@pytest.fixture
def many_fds() -> Iterator[None]:
    """Room in this process for 10,000+ client sockets, within the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 11_000 if hard == resource.RLIM_INFINITY else min(hard, 11_000)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def connect_many(port: int, count: int) -> list[socket.socket]:
    """``count`` connections that never send a byte (connecting without waiting)."""
    sockets = []
    for _ in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        code = sock.connect_ex(("127.0.0.1", port))
        assert code in (0, errno.EINPROGRESS), os.strerror(code)
        sockets.append(sock)
    return sockets


def closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(1, socket.MSG_DONTWAIT | socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:  # reset
        return True


def close_all(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        sock.close()


class Slowloris:
    """Connections sending a request head one header line at a time, forever."""

    def __init__(self, port: int, count: int) -> None:
        self.sockets = connect_many(port, count)
        self.open = set(range(count))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._trickle, name="slowloris")
        self._thread.start()

    def _trickle(self) -> None:
        line = 0
        while not self._stop.is_set():
            for i in list(self.open):
                data = b"GET / HTTP/1.1\r\nHost: x\r\n" if line == 0 else b"X-%d: y\r\n" % line
                try:
                    self.sockets[i].send(data)
                except (BlockingIOError, InterruptedError):
                    pass  # still connecting: next round
                except OSError:
                    self.open.discard(i)
                    continue
                if closed_by_peer(self.sockets[i]):
                    self.open.discard(i)
            line += 1
            self._stop.wait(0.5)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        close_all(self.sockets)


def test_ten_thousand_idle_and_500_slowloris_connections_do_not_lock_out_a_client(
    served: Served, many_fds: None
) -> None:
    idle = connect_many(served.port, 10_000)
    slow = Slowloris(served.port, 500)
    try:
        # The server takes them all in and closes the oldest idle ones past its cap: once it
        # answers again, it answers every normal request within a second.
        wait_until(lambda: served.get(timeout=30)[0] == 200, timeout=60, what="an answer")
        for _ in range(5):
            status, body, took = served.get()
            assert (status, body) == (200, b"ok") and took < 1.0, took
        # It holds no more than its cap (1000): the rest were closed as newer ones came.
        wait_until(lambda: served.open_fds() < 1100, timeout=30, what="the cap to hold")
        assert any(closed_by_peer(sock) for sock in idle)
    finally:
        slow.close()
        close_all(idle)
    assert "Traceback" not in served.log()


def test_slowloris_connections_are_closed_after_the_header_timeout(served: Served) -> None:
    slow = Slowloris(served.port, 500)
    try:
        wait_until(lambda: len(slow.open) == 500 and slow.sockets, what="500 slow heads")
        for _ in range(3):
            status, _, took = served.get()
            assert status == 200 and took < 1.0, took
        # Each is closed HEADER_TIMEOUT seconds after its first byte; allow a loaded machine.
        wait_until(lambda: not slow.open, timeout=HEADER_TIMEOUT + 20, what="slowloris closed")
    finally:
        slow.close()
    assert "no complete request head within 2 s" in served.log()
    assert "Traceback" not in served.log()


def test_large_bodies_to_a_404_do_not_grow_memory(served: Served) -> None:
    served.get()
    before = served.status("VmHWM")
    body = b"x" * 1024 * 1024

    async def post_all() -> Counter[int]:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

            async def post(i: int) -> int:
                url = f"{served.url}/nowhere/{i}"
                headers = {"Content-Type": "application/json"}
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    return response.status

            return Counter(await asyncio.gather(*(post(i) for i in range(300))))

    assert asyncio.run(post_all()) == {404: 300}
    grown_mb = (served.status("VmHWM") - before) / 1024
    # Reading the 300 bodies grew it by ~350 MB; unread, each costs at most a socket read.
    assert grown_mb < 150, f"peak memory grew by {grown_mb:.0f} MB"


def raw(served: Served, data: bytes) -> bytes:
    """Send ``data`` on a fresh connection; the response head that comes back."""
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(data)
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        return received


BAD_LINE = b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n"


def post(path: bytes, headers: bytes, body: bytes) -> bytes:
    head = b"POST %s HTTP/1.1\r\nHost: x\r\n%sContent-Length: %d\r\n\r\n"
    return head % (path, headers, len(body)) + body


def test_client_mistakes_are_4xx_and_never_a_traceback(served: Served) -> None:
    json_type = b"Content-Type: application/json\r\n"
    cases = {
        "bad port in Host": b"GET / HTTP/1.1\r\nHost: x:99999\r\n\r\n",
        "garbage gzip": post(b"/echo", json_type + b"Content-Encoding: gzip\r\n", b"not gzip"),
        "JSON 100,000 deep": post(b"/echo", json_type, b"[" * 100_000 + b"]" * 100_000),
        "form of 128k keys": post(
            b"/echo",
            b"Content-Type: application/x-www-form-urlencoded\r\n",
            b"&".join(b"k%d=v" % i for i in range(128_000)),
        ),
        "bad request line": BAD_LINE,
    }
    for what, request in cases.items():
        answer = raw(served, request)
        status = int(answer.split(b" ", 2)[1])
        assert 400 <= status < 500, f"{what}: {answer[:80]!r}"
        assert b"X-Content-Type-Options: nosniff" in answer, what
    # A real gzip body still works.
    answer = raw(
        served, post(b"/echo", json_type + b"Content-Encoding: gzip\r\n", gzip.compress(b"[1]"))
    )
    assert answer.startswith(b"HTTP/1.1 200 ")
    wait_until(lambda: "bad request from 127.0.0.1" in served.log(), what="the one-line log")
    assert "Traceback" not in served.log()


def test_expect_100_continue_is_answered(served: Served) -> None:
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Expect: 100-continue\r\nContent-Length: 3\r\n\r\n"
        )
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"[1]")
        assert b'{"json": [1]}' in sock.recv(65536)


def test_head_of_an_event_stream_is_headers_only_and_the_connection_goes_on(
    served: Served,
) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
    try:
        connection.request("HEAD", "/counter")
        response = connection.getresponse()
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/event-stream; charset=UTF-8"
        assert response.read() == b""
        connection.request("GET", "/")  # the same keep-alive connection
        assert connection.getresponse().read() == b"ok"
        connection.request("GET", "/started")
        assert connection.getresponse().read() == b"0"  # the stream's producer never ran
    finally:
        connection.close()


def test_a_flood_of_bad_requests_or_failed_accepts_logs_a_line_a_second(served: Served) -> None:
    began = time.monotonic()
    for _ in range(500):
        raw(served, BAD_LINE)
    took = time.monotonic() - began
    wait_until(lambda: "more like this" in served.log(), timeout=10, what="a counted line")
    lines = [line for line in served.process.stderr_lines if "bad request from" in line]
    assert len(lines) <= took + 3, lines

    # An app that leaks every file descriptor: accept() fails until it lets go, 3 s later.
    assert served.get("/hog?3")[0] == 200
    waiting = connect_many(served.port, 50)
    try:
        wait_until(lambda: served.get(timeout=30)[0] == 200, timeout=60, what="recovery")
    finally:
        close_all(waiting)
    failures = [line for line in served.process.stderr_lines if "cannot accept" in line]
    assert 1 <= len(failures) <= 10, failures
    assert "Traceback" not in served.log()
