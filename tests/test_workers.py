"""``replkit serve APP --workers N --no-watch``: worker processes sharing one port."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import (
    ROOT,
    Process,
    RedisServer,
    free_port,
    replkit_command,
    served_url,
    until,
    wait_until,
)

PID_APP = """\
import asyncio
import os
import sys

import replkit.aiohttp as hk
from replkit import connector as conn
from replkit import sse

if CRASH_IN_WORKERS and "worker" in sys.argv:
    raise SystemExit(3)


async def forever(channel, context):
    while await channel.send(os.getpid()):
        await asyncio.sleep(0.2)


def create_connector():
    routes = [
        ("/pid", "get", lambda request: {"status": 200, "body": str(os.getpid())}),
        ("/stream", "get", {"name": "stream", "enter": lambda c: sse.start_stream(forever, c)}),
    ]
    connector_map = conn.default_connector_map(0, "127.0.0.1")
    return hk.create_connector(conn.with_routes(connector_map, routes))


async def gunicorn_app():  # gunicorn news:gunicorn_app --worker-class aiohttp.GunicornWebWorker
    return hk.application(create_connector())
"""


def write_app(tmp_path: Path, crash: bool = False) -> None:
    (tmp_path / "pids.py").write_text(f"CRASH_IN_WORKERS = {crash}\n" + PID_APP)


def pid_of(url: str) -> int:
    request = urllib.request.Request(f"{url}/pid", headers={"Connection": "close"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return int(response.read())


def workers_of(supervisor: int) -> set[int]:
    """The live child processes of ``supervisor``, from /proc."""
    children = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == supervisor:
                children.add(int(entry.name))
    return children


def test_workers_share_the_port_are_replaced_and_stop_within_a_second(
    tmp_path: Path, spawn: Callable[..., Process]
) -> None:
    write_app(tmp_path)
    process = spawn(*replkit_command("serve", "pids", "--workers", "3", "--no-watch"), cwd=tmp_path)
    line = process.next_line()
    assert line.endswith("with 3 workers (not watching files)"), line
    url = served_url(line)
    supervisor = process.proc.pid
    wait_until(lambda: len(workers_of(supervisor)) == 3, 10, "three workers")
    seen = wait_until(
        lambda: {pid_of(url) for _ in range(30)} if len(_answering(url)) > 1 else None,
        10,
        "requests spread over more than one worker",
    )
    assert seen <= workers_of(supervisor)

    victim = pid_of(url)
    os.kill(victim, signal.SIGKILL)
    wait_until(
        lambda: len(workers := workers_of(supervisor)) == 3 and victim not in workers,
        10,
        "the killed worker to be replaced",
    )
    assert pid_of(url) != victim
    wait_until(lambda: any("exited with status -9" in e for e in process.stderr_lines), 5)

    streams = [urllib.request.urlopen(f"{url}/stream", timeout=5) for _ in range(6)]
    for stream in streams:
        assert stream.readline().startswith(b"data: ")
    workers = workers_of(supervisor)
    sent = time.monotonic()
    process.proc.send_signal(signal.SIGTERM)
    assert process.finish(timeout=5) == 0
    assert time.monotonic() - sent < 1.0
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()]
    for stream in streams:
        stream.close()


def _answering(url: str) -> set[int]:
    return {pid_of(url) for _ in range(30)}


def test_a_worker_that_keeps_failing_at_start_stops_the_group(
    tmp_path: Path, spawn: Callable[..., Process]
) -> None:
    write_app(tmp_path, crash=True)
    process = spawn(*replkit_command("serve", "pids", "--workers", "2", "--no-watch"), cwd=tmp_path)
    assert process.finish(timeout=30) == 1
    assert any(
        "exited with status 1 right after starting, 5 times in a row; stopping" in line
        for line in process.stderr_lines
    ), process.stderr_lines
    assert "replkit: importing pids: pids.py:11: SystemExit: 3" in process.stderr_lines


def test_workers_with_hot_reload_are_refused_in_one_line(
    tmp_path: Path, spawn: Callable[..., Process]
) -> None:
    write_app(tmp_path)
    process = spawn(*replkit_command("serve", "pids", "--workers", "2"), cwd=tmp_path)
    assert process.finish(timeout=10) == 1
    assert process.stderr_lines == [
        "replkit: --workers runs production workers, which never reload: add --no-watch "
        "(hot reload is for one process, replkit serve or replkit repl)"
    ]


NEWS_APP = """\
import os

import replkit.aiohttp as hk
from replkit import connector as conn
from replkit import sse
from replkit.lifecycle import defonce

# REPLKIT_REDIS_URL puts the topic in Redis: one topic for every worker.
news = defonce("news", lambda: sse.Topic(history=10_000, buffer=1000, name="news"))


def publish(request):
    event = {"name": "n", "data": request["json_params"]}
    return {"status": 200, "body": {"id": news.publish(event), "worker": os.getpid()}}


def start(request):
    return {"status": 200, "body": {"start": news.start_id}}


def worker_header(context):
    response = context.get("response")
    if response is None:
        return context
    headers = {**(response.get("headers") or {}), "X-Worker": str(os.getpid())}
    return {**context, "response": {**response, "headers": headers}}


def create_connector():
    connector_map = conn.default_connector_map(0, "127.0.0.1")
    connector_map = conn.with_default_interceptors(connector_map)
    connector_map = conn.with_interceptors(connector_map, {"name": "pid", "leave": worker_header})
    routes = [
        ("/events", "get", sse.topic_stream(news, heartbeat_delay=1)),
        ("/publish", "post", publish),
        ("/start", "get", start),
    ]
    return hk.create_connector(conn.with_routes(connector_map, routes))


async def gunicorn_app():  # gunicorn news:gunicorn_app --worker-class aiohttp.GunicornWebWorker
    return hk.application(create_connector())
"""


class Client:
    """One stream client that, as EventSource does, reconnects with ``Last-Event-ID`` when
    its connection ends, and keeps the ids it received."""

    def __init__(self, url: str, start: str) -> None:
        self.url = url
        self.last_id = start
        self.ids: list[str] = []
        self.workers: list[int] = []

    async def run(self, session: aiohttp.ClientSession, count: int) -> None:
        while len(self.ids) < count:
            try:
                async with session.get(
                    f"{self.url}/events", headers={"Last-Event-ID": self.last_id}
                ) as response:
                    self.workers.append(int(response.headers["X-Worker"]))
                    async for line in response.content:
                        if line.startswith(b"id: "):
                            self.last_id = line[4:].decode().strip()
                            self.ids.append(self.last_id)
                            if len(self.ids) >= count:
                                return
            except (aiohttp.ClientError, ConnectionError):
                await asyncio.sleep(0.1)  # EventSource's retry delay, shortened


async def publish_through_workers(url: str, count: int) -> tuple[list[str], set[int]]:
    """Publish ``count`` events, each on a fresh connection so the kernel picks a worker."""
    ids, workers = [], set()
    async with aiohttp.ClientSession() as session:
        for i in range(count):
            async with session.post(
                f"{url}/publish", json={"i": i}, headers={"Connection": "close"}
            ) as response:
                answer = await response.json()
            ids.append(answer["id"])
            workers.add(answer["worker"])
    return ids, workers


async def serve_news(
    tmp_path: Path, spawn: Callable[..., Process], redis_url: str, workers: int
) -> tuple[str, int, str]:
    """The news app on ``workers`` workers sharing a Redis topic: its URL, the supervisor's
    pid, and the topic's start id."""
    (tmp_path / "news.py").write_text(NEWS_APP)
    process = spawn(
        *replkit_command("serve", "news", "--port", "0", "--workers", str(workers), "--no-watch"),
        cwd=tmp_path,
        env={"REPLKIT_REDIS_URL": redis_url},
    )
    url = served_url(process.next_line())
    supervisor = process.proc.pid
    await until(lambda: len(workers_of(supervisor)) == workers, 10, f"{workers} workers")
    async with aiohttp.ClientSession() as session, session.get(f"{url}/start") as response:
        return url, supervisor, (await response.json())["start"]


@pytest.mark.timeout(120)
async def test_four_workers_two_thousand_clients_every_event_once_in_order(
    tmp_path: Path, spawn: Callable[..., Process], redis_server: RedisServer
) -> None:
    url, _, start = await serve_news(tmp_path, spawn, redis_server.url, 4)
    clients = [Client(url, start) for _ in range(2000)]
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        gate = asyncio.Semaphore(250)

        async def connect_then_read(client: Client) -> None:
            async with gate:  # connecting in waves; reading all at once
                await asyncio.sleep(0)
            await client.run(session, 30)

        readers = asyncio.gather(*(connect_then_read(c) for c in clients))
        ids, publishers = await publish_through_workers(url, 30)
        await asyncio.wait_for(readers, 90)
    assert len(publishers) > 1, "every event was published through one worker"
    assert len({c.workers[0] for c in clients}) == 4, "the clients did not reach every worker"
    for client in clients:
        assert client.ids == ids  # every event, once, in order, whichever worker served it


@pytest.mark.timeout(120)
async def test_clients_of_a_killed_worker_resume_elsewhere_with_no_gap(
    tmp_path: Path, spawn: Callable[..., Process], redis_server: RedisServer
) -> None:
    url, supervisor, start = await serve_news(tmp_path, spawn, redis_server.url, 3)
    browsers = [Browser(url, start, 25) for _ in range(6)]
    try:
        await check_killed_workers(url, supervisor, start, browsers)
    finally:
        for browser in browsers:
            browser.kill()


async def check_killed_workers(
    url: str, supervisor: int, start: str, browsers: list[Browser]
) -> None:
    for browser in browsers:
        await browser.start()
    # Connected before any worker dies: a first request cut by a dying worker can leave
    # undici's fetch (under the npm client) waiting for ever, which is not what is tested.
    await until(lambda: all(b.opened() for b in browsers), 20, "the npm clients to connect")
    clients = [Client(url, start) for _ in range(60)]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        readers = asyncio.gather(*(c.run(session, 25) for c in clients))
        published, _ = await publish_through_workers(url, 10)
        await until(lambda: all(len(c.ids) >= 10 for c in clients), 20, "the first ten events")
        # Every worker killed in turn, mid-stream: every client loses its connection once.
        for victim in workers_of(supervisor):
            os.kill(victim, signal.SIGKILL)
            await until(lambda v=victim: len(w := workers_of(supervisor)) == 3 and v not in w, 10)
            published += (await publish_through_workers(url, 5))[0]
        await asyncio.wait_for(readers, 60)
    for client in clients:
        assert len(client.workers) > 1 and client.ids == published
    for browser in browsers:
        got = await browser.finish()
        assert any("error" in line for line in got)  # it lost its worker, and came back
        assert [event["lastEventId"] for event in got if "lastEventId" in event] == published


class Browser:
    """The npm ``eventsource`` client (tests/js/eventsource-client.mjs) in a Node process,
    resuming from ``start`` and done after ``count`` events; its output read as it comes."""

    def __init__(self, url: str, start: str, count: int) -> None:
        self.arguments = [f"{url}/events?lastEventId={start}", "n", str(count), "40000"]
        self.lines: list[dict[str, Any]] = []
        self.process: asyncio.subprocess.Process | None = None
        self.reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        script = str(ROOT / "tests" / "js" / "eventsource-client.mjs")
        self.process = await asyncio.create_subprocess_exec(
            "node", script, *self.arguments, stdout=asyncio.subprocess.PIPE
        )
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        async for line in self.process.stdout:
            self.lines.append(json.loads(line))

    def opened(self) -> bool:
        return any(line.get("open") for line in self.lines)

    def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()

    async def finish(self) -> list[dict[str, Any]]:
        assert self.process is not None and self.reader is not None
        await asyncio.wait_for(self.reader, 50)
        assert await self.process.wait() == 0, self.lines
        return self.lines


@pytest.mark.timeout(60)
async def test_the_same_app_under_gunicorn_with_aiohttps_worker(
    tmp_path: Path, spawn: Callable[..., Process], redis_server: RedisServer
) -> None:
    (tmp_path / "news.py").write_text(NEWS_APP)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    gunicorn = spawn(
        sys.executable, "-m", "gunicorn", "news:gunicorn_app",
        "--worker-class", "aiohttp.GunicornWebWorker", "--workers", "2",
        "--bind", f"127.0.0.1:{port}", "--graceful-timeout", "1",
        cwd=tmp_path,
        env={"REPLKIT_REDIS_URL": redis_server.url},
    )  # fmt: skip
    async with aiohttp.ClientSession() as session:
        start = await until_answered(session, f"{url}/start")
        client = Client(url, start)
        reader = asyncio.ensure_future(client.run(session, 10))
        published, _ = await publish_through_workers(url, 10)
        await asyncio.wait_for(reader, 20)
    assert client.ids == published
    gunicorn.proc.send_signal(signal.SIGTERM)
    assert gunicorn.finish(timeout=10) == 0


async def until_answered(session: aiohttp.ClientSession, url: str) -> str:
    """The start id, once gunicorn's workers answer."""
    deadline = time.monotonic() + 20
    while True:
        try:
            async with session.get(url) as response:
                return (await response.json())["start"]
        except aiohttp.ClientConnectionError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)
