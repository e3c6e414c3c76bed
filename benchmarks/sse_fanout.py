"""Topic fan-out: how long one event takes to reach 1k and 10k subscribers, and how fast a
thread can publish while one subscriber is frozen.

Runs ``replkit serve`` on a small topic app in a process of its own. Subscribers are raw
asyncio connections in this process (lighter than an HTTP client library, so that the
figure is mostly the server's). For latency, each event carries ``time.monotonic()`` taken
just before ``publish`` (the clock is shared by processes on one machine); the figure is the
time until the last subscriber has it. For throughput, a thread publishes 20,000 events of
100 bytes as fast as it can to 100 readers, then to 100 readers and one client that never
reads (socket receive buffer 4 KiB), with a buffer that holds the whole flood, then with a
buffer of 100 and ``drop_oldest`` (an unpaced flood outruns the readers too).
Run: ``python benchmarks/sse_fanout.py [--subscribers 1000 10000] [--events 5]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

APP = """
import asyncio
import json
import threading
import time

import replkit.aiohttp as hk
import replkit.connector as conn
import replkit.sse as sse
from replkit.lifecycle import defonce

topics = defonce("topics", lambda: {})


def topic(name):
    if name not in topics:
        options = {}
        if name.startswith("flood"):  # flood-<slow>-<buffer>-<frozen>
            _, slow, buffer, _ = name.split("-")
            options = {"slow": slow, "buffer": int(buffer)}
        topics[name] = sse.Topic(name=name, **options)
    return topics[name]


def stamp(request):
    topic(request["path_params"]["name"]).publish(str(time.monotonic()))
    return {"status": 202, "body": ""}


async def flood(request):
    t, n = topic(request["path_params"]["name"]), int(request["query_params"]["n"])
    padding = "x" * int(request["query_params"]["size"])

    def run():
        started = time.perf_counter()
        for _ in range(n):
            t.publish(padding)
        return time.perf_counter() - started

    seconds = await asyncio.to_thread(run)
    body = {"per_second": n / seconds, "slow_clients": t.slow_clients,
            "dropped_events": t.dropped_events}
    return {"status": 200, "body": json.dumps(body)}


def events(context):
    t = topic(context["request"]["path_params"]["name"])

    async def ready(channel, stream_context):
        await t.subscribe(channel, stream_context)

    return sse.start_stream(ready, context, None)


def count(request):
    return {"status": 200, "body": str(topic(request["path_params"]["name"]).subscribers)}


routes = [
    ("/:name/events", "get", {"name": "events", "enter": events}),
    ("/:name/stamp", "post", stamp),
    ("/:name/flood", "post", flood),
    ("/:name/subscribers", "get", count),
]


def create_connector():
    connector_map = conn.default_connector_map(0, "127.0.0.1")
    connector_map = conn.with_default_interceptors(connector_map)
    connector_map = conn.with_routes(connector_map, routes)
    return hk.create_connector(connector_map, None)
"""


class Reader(asyncio.Protocol):
    """A subscriber that notes, for each event, how long after its stamp it arrived."""

    def __init__(self, path: str, arrived: dict[float, list[float]] | None) -> None:
        self.path = path
        self.arrived = arrived
        self.rest = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())

    def data_received(self, data: bytes) -> None:
        if self.arrived is None:  # a reader for the throughput figure: it only reads
            return
        now = time.monotonic()
        self.rest += data
        while (start := self.rest.find(b"data: ")) >= 0 and (
            end := self.rest.find(b"\n", start)
        ) >= 0:
            stamp = float(self.rest[start + 6 : end])
            self.arrived.setdefault(stamp, []).append(now - stamp)
            self.rest = self.rest[end:]


def post(url: str) -> bytes:
    request = urllib.request.Request(url, method="POST", data=b"")
    with urllib.request.urlopen(request, timeout=120) as response:
        return response.read()


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


async def connect(host: str, port: int, path: str, count: int, arrived: Any) -> list[Any]:
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(100)

    async def one() -> asyncio.BaseTransport:
        async with gate:
            transport, _ = await loop.create_connection(lambda: Reader(path, arrived), host, port)
            return transport

    return await asyncio.gather(*(one() for _ in range(count)))


async def wait_for_subscribers(url: str, count: int) -> None:
    deadline = time.monotonic() + 120
    while int(await asyncio.to_thread(get, url)) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count} subscribers did not all subscribe")
        await asyncio.sleep(0.1)


async def latency(url: str, host: str, port: int, subscribers: int, events: int) -> None:
    name = f"fanout{subscribers}"
    arrived: dict[float, list[float]] = {}
    transports = await connect(host, port, f"/{name}/events", subscribers, arrived)
    await wait_for_subscribers(f"{url}/{name}/subscribers", subscribers)
    to_all = []
    for _ in range(events):
        before = set(arrived)
        await asyncio.to_thread(post, f"{url}/{name}/stamp")
        deadline = time.monotonic() + 60
        while not (new := set(arrived) - before) or len(arrived[min(new)]) < subscribers:
            if time.monotonic() > deadline:
                raise TimeoutError("an event did not reach every subscriber")
            await asyncio.sleep(0.005)
        to_all.append(max(arrived[min(new)]))
        await asyncio.sleep(0.5)  # let the server go idle between events
    for transport in transports:
        transport.close()
    median = statistics.median(to_all) * 1000
    print(
        f"one event to {subscribers:>6} subscribers: median {median:.0f} ms until the last "
        f"has it (each of {events}: {', '.join(f'{t * 1000:.0f}' for t in to_all)} ms)"
    )


async def throughput(
    url: str, host: str, port: int, policy: str, buffer: int, frozen: bool
) -> None:
    name = f"flood-{policy}-{buffer}-{int(frozen)}"
    transports = await connect(host, port, f"/{name}/events", 100, None)
    stuck = None
    if frozen:
        stuck = socket.socket()
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.connect((host, port))
        stuck.sendall(f"GET /{name}/events HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    await wait_for_subscribers(f"{url}/{name}/subscribers", 100 + frozen)
    result = json.loads(await asyncio.to_thread(post, f"{url}/{name}/flood?n=20000&size=100"))
    for transport in transports:
        transport.close()
    if stuck is not None:
        stuck.close()
    print(
        f"publish() from a thread, 100 readers{' + 1 frozen' if frozen else '':<11}, "
        f"buffer {buffer:>6}, slow={policy:<11}: {result['per_second']:>7,.0f} events/s "
        f"(slow clients {result['slow_clients']}, dropped events {result['dropped_events']})"
    )


async def run(url: str, subscribers: list[int], events: int) -> None:
    host, port = url.removeprefix("http://").split(":")
    for count in subscribers:
        await latency(url, host, int(port), count, events)
    # A buffer larger than the flood: nobody is cut, the frozen client just holds events.
    for frozen in (False, True):
        await throughput(url, host, int(port), "disconnect", 100_000, frozen)
    await throughput(url, host, int(port), "drop_oldest", 100, True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--events", type=int, default=5)
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # 10k sockets each side
    with tempfile.TemporaryDirectory() as directory:
        Path(directory, "fanout_app.py").write_text(APP)
        log = Path(directory, "server.log")  # a request log line per subscriber: not a pipe
        with log.open("w") as stderr:
            server = subprocess.Popen(
                [sys.executable, "-m", "replkit", "serve", "fanout_app", "--no-watch"],
                cwd=directory,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
            try:
                assert server.stdout is not None
                line = server.stdout.readline().strip()
                if not line.startswith("serving on "):
                    raise SystemExit(f"the server did not start: {log.read_text()[-500:]}")
                asyncio.run(run(line.removeprefix("serving on "), args.subscribers, args.events))
            finally:
                server.terminate()
                server.wait(timeout=10)


if __name__ == "__main__":
    main()
