"""Save -> new code served over HTTP, end to end, with an event stream kept open.

For each app shape (the guide's ``app/sse_demo.py``; an app whose routes a helper builds
and whose handler lives in another module; a plain aiohttp app with an aiohttp-sse
stream), runs ``replkit serve`` on a copy in a temporary directory, opens the app's event
stream, then saves the handler's file N times with a new text and polls ``/`` (every 2 ms)
until that text is served. Prints the median and p90 of the latency per app, and how many
events the stream opened first received.
Run: ``python benchmarks/save_to_served.py [--n 30] [--app guide|helper|aiohttp]``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

HELPER_HANDLERS = 'def hello(request):\n    return {"status": 200, "body": "Hello, World!"}\n'
HELPER_APP = """\
import asyncio

import replkit.aiohttp as hk
from replkit import connector as conn
from replkit import sse

from .handlers import hello


async def ticks(channel, context):
    for i in range(10):
        await channel.send({"name": "tick", "data": i})
        await asyncio.sleep(1)
    channel.close()


def table(*rows):
    return [("/", "get", hello), *rows]


def create_connector():
    stream = {"name": "ticks", "enter": lambda context: sse.start_stream(ticks, context)}
    connector_map = conn.with_default_interceptors(conn.default_connector_map(8890))
    return hk.create_connector(conn.with_routes(connector_map, table(("/ticks", "get", stream))))
"""
AIOHTTP_APP = """\
import asyncio

from aiohttp import web
from aiohttp_sse import sse_response


async def page(request):
    return web.Response(text="Hello, World!")


async def ticks(request):
    async with sse_response(request) as stream:
        for i in range(10):
            await stream.send(str(i), event="tick")
            await asyncio.sleep(1)
    return stream


def create_app():
    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/ticks", ticks)
    return app
"""


@dataclass(frozen=True)
class App:
    """An app shape: its files, what to serve, which file a save edits, where it streams."""

    files: dict[str, str]
    spec: str
    edited: str
    stream: str
    event: bytes


APPS = {
    "guide": App({}, "app.sse_demo", "app/sse_demo.py", "/counter", b"event: counter"),
    "helper": App(
        {
            "shapes/__init__.py": "",
            "shapes/handlers.py": HELPER_HANDLERS,
            "shapes/app.py": HELPER_APP,
        },
        "shapes.app",
        "shapes/handlers.py",
        "/ticks",
        b"event: tick",
    ),
    "aiohttp": App(
        {"web_app.py": AIOHTTP_APP}, "web_app:create_app", "web_app.py", "/ticks", b"event: tick"
    ),
}


def fetch(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=15) as response:
            return response.read()
    except OSError:
        return b""


def measure(app: App, n: int) -> tuple[list[float], int]:
    """The save -> served latencies (ms) of ``n`` saves, and the events the first stream got."""
    with tempfile.TemporaryDirectory() as directory:
        base = Path(directory)
        shutil.copytree(ROOT / "app", base / "app")
        for name, text in app.files.items():
            (base / name).parent.mkdir(parents=True, exist_ok=True)
            (base / name).write_text(text)
        source = base / app.edited
        original = source.read_text()
        server = subprocess.Popen(
            [sys.executable, "-m", "replkit", "serve", app.spec, "--port", "0"],
            cwd=directory,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert server.stdout is not None
            url = server.stdout.readline().split()[2]
            streamed: list[bytes] = []
            reader = threading.Thread(
                target=lambda: streamed.append(fetch(f"{url}{app.stream}")), daemon=True
            )
            reader.start()
            latencies = []
            for i in range(n):
                text = f"Hello, save {i}!"
                saved = time.perf_counter()
                source.write_text(original.replace("Hello, World!", text))
                deadline = saved + 5
                while fetch(f"{url}/") != text.encode():
                    if time.perf_counter() > deadline:
                        raise SystemExit(f"{app.spec}: save {i} was not served within 5 s")
                    time.sleep(0.002)
                latencies.append((time.perf_counter() - saved) * 1000)
            reader.join(timeout=15)
        finally:
            server.terminate()
            server.wait(timeout=5)
    return latencies, b"".join(streamed).count(app.event)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=30, help="number of saves (default 30)")
    parser.add_argument("--app", choices=sorted(APPS), action="append", help="default: all")
    args = parser.parse_args()
    for name in args.app or list(APPS):
        latencies, events = measure(APPS[name], args.n)
        cut = statistics.quantiles(latencies, n=10)
        print(
            f"{name:>8}: save -> served over HTTP, {args.n} saves: median "
            f"{statistics.median(latencies):.1f} ms, p90 {cut[-1]:.1f} ms, "
            f"max {max(latencies):.1f} ms; the stream opened first got {events} of 10 events"
        )


if __name__ == "__main__":
    main()
