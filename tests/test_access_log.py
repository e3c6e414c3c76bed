"""replkit.access_log: one record per response, handed to logging once per turn of the loop,
each as logging would make it and dated when its response completed."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request
from conftest import wait_until

from replkit import access_log, sse
from replkit.access_log import ACCESS_LOG, AccessLog


class Collected(logging.Handler):
    """The records a logger handed on, and when each arrived."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []
        self.arrived: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.arrived.append(time.time())


@pytest.fixture
def collected() -> Any:
    handler = Collected()
    logger = logging.getLogger("test.access")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)


async def test_the_lines_of_one_turn_reach_logging_at_its_end_in_order(
    collected: Collected,
) -> None:
    logger = logging.getLogger("test.access")
    quiet = logging.getLogger("test.access.quiet")
    quiet.setLevel(logging.WARNING)
    paths = ["/a?x=1", "/b", "/quiet", "/c%20d"]
    log = AccessLog(lambda request: quiet if request.path == "/quiet" else logger)
    before = time.time()
    for status, path in enumerate(paths, start=200):
        request = make_mocked_request("GET", path)
        log.add(log.logger_of(request), request, status, 0.00125)
    assert collected.records == []  # not yet: the turn is not over
    await asyncio.sleep(0)
    messages = [record.getMessage() for record in collected.records]
    assert messages == [
        "None GET /a?x=1 200 1.2 ms",  # a mocked request has no peer address
        "None GET /b 201 1.2 ms",
        "None GET /c%20d 203 1.2 ms",
    ]
    created = [record.created for record in collected.records]
    assert before <= created[0] <= created[1] <= created[2] <= collected.arrived[0]

    # A line added after the flush waits for the next turn, or for flush().
    log.add(logger, make_mocked_request("GET", "/late"), 200, 0.0)
    log.flush()
    assert collected.records[-1].getMessage() == "None GET /late 200 0.0 ms"
    await asyncio.sleep(0)
    assert len(collected.records) == 4


def test_each_response_of_a_busy_server_is_logged_once_with_its_time(
    serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    def hello(request: dict[str, Any]) -> dict[str, Any]:
        return {"status": 200, "body": request["query_string"]}

    connector = serve([("/", "get", hello)])
    url = f"{connector.url}/?"

    def fetch(i: int) -> bytes:
        with urllib.request.urlopen(f"{url}{i}") as response:
            return bytes(response.read())

    with caplog.at_level(logging.INFO, logger="replkit.access"):
        before = time.time()
        with ThreadPoolExecutor(16) as pool:
            bodies = list(pool.map(fetch, range(400)))
        assert bodies == [str(i).encode() for i in range(400)]

        def lines() -> list[logging.LogRecord]:
            return [r for r in caplog.records if r.name == "replkit.access"]

        wait_until(lambda: len(lines()) >= 400, what="400 access lines")
        # Not when the last client had its body: the server logs a response once it has
        # written it, which may be a moment after the client read it.
        after = time.time()
    records = lines()
    assert sorted(r.args[2] for r in records) == sorted(f"/?{i}" for i in range(400))  # type: ignore[index]
    assert all(before <= r.created <= after for r in records)
    assert [r.created for r in records] == sorted(r.created for r in records)
    assert {r.thread for r in records} == {records[0].thread} != threading.get_ident()


def test_a_stream_cut_by_stop_is_logged_before_stop_returns(
    serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async def ready(_chan: sse.EventChannel, _context: dict[str, Any]) -> None:
        pass  # nothing to send: the stream stays open until the server stops

    stream = {"name": "stream", "enter": lambda ctx: sse.start_stream(ready, ctx, 30)}
    connector = serve([("/events", "get", stream)])
    with caplog.at_level(logging.INFO, logger="replkit.access"):
        response = urllib.request.urlopen(f"{connector.url}/events")
        assert response.status == 200
        connector.stop()
        logged = [r.getMessage() for r in caplog.records if r.name == "replkit.access"]
    response.close()
    assert len(logged) == 1 and logged[0].startswith("127.0.0.1 GET /events 200 ")


def test_a_stream_the_client_leaves_is_logged_once(
    serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    news = sse.Topic()
    connector = serve(
        [
            ("/news", "get", sse.topic_stream(news)),
            ("/", "get", lambda _: {"status": 200, "body": "ok"}),
        ]
    )
    host, port = connector.url.removeprefix("http://").split(":")

    def logged(path: str) -> list[str]:
        lines = [r.getMessage() for r in caplog.records if r.name == "replkit.access"]
        return [line for line in lines if f" GET {path} " in line]

    with caplog.at_level(logging.INFO, logger="replkit.access"):
        with socket.create_connection((host, int(port)), timeout=5) as client:
            client.sendall(f"GET /news HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            assert client.recv(4096).startswith(b"HTTP/1.1 200 OK")
            wait_until(lambda: news.subscribers == 1, what="the subscriber")
            news.publish("one")
            assert b"data: one" in client.recv(4096)
        wait_until(lambda: logged("/news"), what="the line of the stream the client left")
        # A request answered after it: once its line is in, no second /news line can come.
        with urllib.request.urlopen(f"{connector.url}/", timeout=5) as response:
            assert response.read() == b"ok"
        wait_until(lambda: logged("/"), what="the line of the next request")
    [line] = logged("/news")
    assert re.fullmatch(r"127\.0\.0\.1 GET /news 200 [\d.]+ ms", line)


def test_an_access_record_is_the_one_logging_would_make() -> None:
    logger = ACCESS_LOG
    args = ("127.0.0.1", "GET", "/?q=1", 200, 1.25)
    made = access_log.access_record(logger, args)
    expected = logger.makeRecord(
        logger.name,
        logging.INFO,
        access_log.__file__,
        access_log._LOG_LINE,
        access_log.LOG_FORMAT,
        args,
        None,
        "add",
    )
    times = ("created", "msecs", "relativeCreated")
    assert {k: v for k, v in vars(made).items() if k not in times} == {
        k: v for k, v in vars(expected).items() if k not in times
    }
    assert abs(made.created - expected.created) < 1
    assert abs(made.relativeCreated - expected.relativeCreated) < 1000
    everything = logging.Formatter(
        "%(levelname)s %(name)s %(pathname)s %(module)s %(funcName)s %(lineno)d %(process)d "
        "%(processName)s %(thread)d %(threadName)s: %(message)s"
    )
    assert everything.format(made) == everything.format(expected)
    assert everything.format(made).endswith(": 127.0.0.1 GET /?q=1 200 1.2 ms")

    # Dated when the response completed, not when logging got it.
    then = int(made.created) - 3600 + 0.5
    earlier = access_log.access_record(logger, args, created=then)
    assert (earlier.created, earlier.msecs) == (then, 500.0)
    gap = (made.created - then) * 1000
    assert made.relativeCreated - earlier.relativeCreated == pytest.approx(gap, abs=1)

    # A forked child makes its own: the process id is in the copies.
    child = os.fork()
    if child == 0:
        fresh = not access_log._record_templates
        made_here = access_log.access_record(logger, args).process == os.getpid()
        os._exit(0 if fresh and made_here else 1)
    assert os.waitpid(child, 0)[1] == 0

    class Mine(logging.LogRecord):
        pass

    previous = logging.getLogRecordFactory()
    logging.setLogRecordFactory(Mine)
    try:
        assert type(access_log.access_record(logger, args)) is Mine
    finally:
        logging.setLogRecordFactory(previous)
