"""Hot reload end to end: real saves to a copy of the guide's app under ``replkit serve``.

One ``/counter`` stream is opened first and kept open through every edit; it must still
receive all ten of its events, from the code it started with.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import ROOT, Process, replkit_command, served_url, wait_until
from test_guide import COUNTER_TRANSCRIPT


def fetch(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read().decode()
    except urllib.error.HTTPError as err:
        return f"{err.code}"
    except OSError as err:
        return f"error: {err}"


class LiveApp:
    """A copy of app/ served by ``replkit serve`` with hot reload on."""

    def __init__(self, tmp_path: Path, spawn: Callable[..., Process]) -> None:
        shutil.copytree(
            ROOT / "app", tmp_path / "app", ignore=shutil.ignore_patterns("__pycache__")
        )
        self.source = tmp_path / "app" / "sse_demo.py"
        self.original = self.source.read_text()
        self.process = spawn(*replkit_command("serve", "app.sse_demo", "--port", "0"), cwd=tmp_path)
        self.url = served_url(self.process.next_line())

    def edit(self, old: str, new: str, *, atomically: bool = False) -> None:
        text = self.source.read_text()
        assert old in text, old
        self.write(text.replace(old, new), atomically=atomically)

    def write(self, text: str, *, atomically: bool = False) -> None:
        if atomically:  # as editors save: a temporary file renamed over the original
            temporary = self.source.with_name(".sse_demo.py.swp")
            temporary.write_text(text)
            os.replace(temporary, self.source)
        else:
            self.source.write_text(text)

    def serves(self, path: str, expected: str, timeout: float = 5.0) -> None:
        wait_until(
            lambda: fetch(f"{self.url}{path}") == expected, timeout, f"{path} to serve {expected!r}"
        )

    def reported(self, fragment: str, timeout: float = 5.0) -> str:
        """A line the server printed (stdout or stderr) containing ``fragment``."""

        def find() -> str | None:
            lines = [*self.process.stderr_lines, *list(self.process.stdout.queue)]
            return next((line for line in lines if fragment in line), None)

        return wait_until(find, timeout, f"a report containing {fragment!r}")


@pytest.fixture
def live_app(tmp_path: Path, spawn: Callable[..., Process]) -> LiveApp:
    return LiveApp(tmp_path, spawn)


@pytest.fixture
def open_stream(live_app: LiveApp) -> Iterator[Callable[[], bytes]]:
    """A /counter stream read by curl from the start; call it to get everything it got."""
    curl = subprocess.Popen(["curl", "-sN", f"{live_app.url}/counter"], stdout=subprocess.PIPE)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(curl.communicate(timeout=30)[0]))
    reader.start()

    def finish() -> bytes:
        reader.join(timeout=30)
        return b"".join(received)

    yield finish
    if curl.poll() is None:
        curl.kill()
    reader.join(timeout=5)


def test_every_kind_of_save_is_served_while_a_stream_stays_open(
    live_app: LiveApp, open_stream: Callable[[], bytes]
) -> None:
    app = live_app
    app.serves("/", "Hello, World!")

    app.edit("Hello, World!", "Hello, plain write!")
    app.serves("/", "Hello, plain write!")

    app.edit("Hello, plain write!", "Hello, atomic save!", atomically=True)
    app.serves("/", "Hello, atomic save!")

    for i in range(5):
        app.edit(
            "Hello, atomic save!" if i == 0 else f"Hello, rapid {i - 1}!", f"Hello, rapid {i}!"
        )
    app.serves("/", "Hello, rapid 4!")

    app.edit("def home_page(", "def home_page(:")
    report = app.reported("reload failed")
    assert "app/sse_demo.py:" in report and "SyntaxError" in report
    assert fetch(f"{app.url}/") == "Hello, rapid 4!"  # the last good code still serves
    app.edit("def home_page(:", "def home_page(")
    app.serves("/", "Hello, rapid 4!")
    app.edit("Hello, rapid 4!", "Hello, recovered!")
    app.serves("/", "Hello, recovered!")

    app.edit("import threading\n", "import threading\nimport no_such_module_here\n")
    report = app.reported("ModuleNotFoundError")
    assert "app/sse_demo.py:" in report and "no_such_module_here" in report
    assert fetch(f"{app.url}/") == "Hello, recovered!"
    app.edit("import no_such_module_here\n", "")

    app.edit(
        '    ("/counter", "get", counter_interceptor),\n',
        '    ("/counter", "get", counter_interceptor),\n'
        '    ("/added", "get", lambda _: {"status": 200, "body": "a new route"}),\n',
    )
    app.serves("/added", "a new route")

    app.edit(
        'event_chan.put({"name": "counter", "data": i})',
        'event_chan.put({"name": "counter", "data": i * 100})',
    )
    wait_until(lambda: b"data: 100\n" in _first_events(app.url, 2), 10, "the new stream_ready")

    # The stream opened before all of this ran the original code to its end.
    assert open_stream() == COUNTER_TRANSCRIPT
    assert fetch(f"{app.url}/") == "Hello, recovered!"


def _first_events(url: str, count: int) -> bytes:
    with urllib.request.urlopen(f"{url}/counter", timeout=5) as response:
        return b"".join(response.readline() for _ in range(3 * count))


def test_a_save_right_after_serving_is_announced_is_seen(live_app: LiveApp) -> None:
    # `serving on` is printed only once the watcher is active: no window to miss a save in.
    live_app.edit("Hello, World!", "Hello, first save!")
    live_app.serves("/", "Hello, first save!")


# --- beyond the guide's shape -------------------------------------------------------------


def test_a_module_stuck_at_import_keeps_the_last_good_code_and_sigterm_stops(
    live_app: LiveApp,
) -> None:
    app = live_app
    app.serves("/", "Hello, World!")
    app.edit("import threading\n", "import threading\nwhile True:\n    pass\n")
    report = app.reported("reload stuck: app/sse_demo.py still executing after")
    assert "still running the last good code" in report
    assert fetch(f"{app.url}/") == "Hello, World!"

    app.edit("while True:\n    pass\n", "")
    app.edit("Hello, World!", "Hello, unstuck!")
    app.serves("/", "Hello, unstuck!")
    app.reported("the failed reload is over")

    app.edit("import threading\n", "import threading\nimport time\ntime.sleep(60)\n")
    app.reported("reload stuck: app/sse_demo.py", timeout=10)
    assert fetch(f"{app.url}/") == "Hello, unstuck!"
    sent = time.monotonic()
    app.process.proc.send_signal(signal.SIGTERM)
    assert app.process.finish(timeout=5) == 0
    assert time.monotonic() - sent < 1.0


AIOHTTP_APP = """\
import asyncio
from pathlib import Path

from aiohttp import web
from aiohttp_sse import sse_response

LOG = Path(__file__).with_name("hooks.log")
VERSION = "v1"


def log(what):
    with LOG.open("a") as out:
        out.write(f"{what} {VERSION}\\n")


async def page(request):
    return web.Response(text=f"page {VERSION}")


async def ticks(request):
    async with sse_response(request) as stream:
        for i in range(40):
            await stream.send(f"{VERSION} {i}")
            await asyncio.sleep(0.05)
    return stream


async def context(app):
    log("context-enter")
    yield
    log("context-exit")


def create_app():
    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/ticks", ticks)
    app.on_startup.append(lambda app: asyncio.sleep(0, log("startup")))
    app.on_shutdown.append(lambda app: asyncio.sleep(0, log("shutdown")))
    app.on_cleanup.append(lambda app: asyncio.sleep(0, log("cleanup")))
    app.cleanup_ctx.append(context)
    return app
"""


def test_a_plain_aiohttp_app_with_an_aiohttp_sse_stream_across_saves(
    tmp_path: Path, spawn: Callable[..., Process]
) -> None:
    source = tmp_path / "web_app.py"  # a single-file module at the project's top level
    source.write_text(AIOHTTP_APP)
    process = spawn(*replkit_command("serve", "web_app:create_app", "--port", "0"), cwd=tmp_path)
    url = served_url(process.next_line())
    assert fetch(f"{url}/") == "page v1"
    lines: list[bytes] = []
    stream = urllib.request.urlopen(f"{url}/ticks", timeout=10)
    reader = threading.Thread(target=lambda: lines.extend(stream), daemon=True)
    reader.start()
    wait_until(lambda: any(b"v1 0" in line for line in lines), 5, "the stream to start")

    for version in ("v2", "v3"):
        text = source.read_text()
        source.write_text(text.replace(f'VERSION = "{_before(version)}"', f'VERSION = "{version}"'))
        wait_until(lambda v=version: fetch(f"{url}/") == f"page {v}", 5, f"page {version}")

    reader.join(15)
    data = [line.decode().strip() for line in lines if line.startswith(b"data:")]
    assert data == [f"data: v1 {i}" for i in range(40)]  # all of them, in order, old code
    log = tmp_path / "hooks.log"
    wait_until(lambda: "cleanup v1" in log.read_text(), 5, "the first app's cleanup")
    hooks = log.read_text().splitlines()
    # Each app starts as web.run_app starts it; a replaced one is cleaned up after its
    # last request (the v1 stream) ended, in run_app's order (cleanup_ctx's exit is the
    # first on_cleanup callback).
    assert hooks[:2] == ["context-enter v1", "startup v1"]
    first = [hook for hook in hooks if hook.endswith(" v1")]
    assert first == [
        "context-enter v1",
        "startup v1",
        "shutdown v1",
        "context-exit v1",
        "cleanup v1",
    ]
    assert hooks.index("startup v3") < hooks.index("cleanup v1")  # v1 outlived two saves
    process.proc.send_signal(signal.SIGTERM)
    assert process.finish(timeout=5) == 0
    assert log.read_text().splitlines()[-3:] == ["shutdown v3", "context-exit v3", "cleanup v3"]


def _before(version: str) -> str:
    return f"v{int(version[1:]) - 1}"


SHAPES_HANDLERS = """\
def hello(request):
    return {"status": 200, "body": "hello v1"}
"""

SHAPES_APP = """\
import asyncio

import replkit.aiohttp as hk
from replkit import connector as conn
from replkit import sse

from .handlers import hello


def stamp(context):
    response = context["response"]
    return {**context, "response": {**response, "headers": {"X-Stamp": "stamp v1"}}}


async def ticks(channel, context):
    for i in range(40):
        await channel.send(i)
        await asyncio.sleep(0.05)
    channel.close()


def table():
    return [
        ("/", "get", hello),
        ("/ticks", "get", {"name": "ticks", "enter": lambda c: sse.start_stream(ticks, c)}),
    ]


def create_connector():
    connector_map = conn.with_default_interceptors(conn.default_connector_map(8890))
    connector_map = conn.with_interceptors(connector_map, {"name": "stamp", "leave": stamp})
    return hk.create_connector(conn.with_routes(connector_map, table()), None)
"""


def test_a_helper_built_app_follows_saves_under_serve(
    tmp_path: Path, spawn: Callable[..., Process]
) -> None:
    (tmp_path / "shapes").mkdir()
    (tmp_path / "shapes" / "__init__.py").write_text("")
    (tmp_path / "shapes" / "handlers.py").write_text(SHAPES_HANDLERS)
    (tmp_path / "shapes" / "app.py").write_text(SHAPES_APP)
    process = spawn(*replkit_command("serve", "shapes.app", "--port", "0"), cwd=tmp_path)
    url = served_url(process.next_line())
    curl = subprocess.Popen(["curl", "-sN", f"{url}/ticks"], stdout=subprocess.PIPE)
    try:
        handlers, app = tmp_path / "shapes" / "handlers.py", tmp_path / "shapes" / "app.py"
        handlers.write_text(SHAPES_HANDLERS.replace("hello v1", "hello v2"))
        wait_until(lambda: fetch(f"{url}/") == "hello v2", 5, "the handler from another module")
        app.write_text(SHAPES_APP.replace("stamp v1", "stamp v2"))
        wait_until(
            lambda: _header(f"{url}/", "X-Stamp") == "stamp v2", 5, "the with_interceptors one"
        )
        out, _ = curl.communicate(timeout=15)
    finally:
        if curl.poll() is None:
            curl.kill()
            curl.wait()
    assert [line for line in out.decode().splitlines() if line] == [f"data: {i}" for i in range(40)]
    assert "reloaded shapes.handlers, shapes.app in" in "\n".join(process.stdout.queue)


def _header(url: str, name: str) -> str | None:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.headers.get(name)


def test_while_a_slow_batch_runs_the_last_good_code_serves(live_app: LiveApp) -> None:
    app = live_app
    app.edit("Hello, World!", "good-2")
    app.serves("/", "good-2")
    app.edit("import threading\n", "import threading\nimport time\ntime.sleep(2)\n")
    app.edit("good-2", "good-3")
    seen = set()
    deadline = time.monotonic() + 10
    while (answer := fetch(f"{app.url}/")) != "good-3" and time.monotonic() < deadline:
        seen.add(answer)
    assert answer == "good-3"
    assert seen <= {"good-2"}  # never the code from process start, never a half-run module


def test_two_hundred_saves_then_ctrl_c(live_app: LiveApp) -> None:
    app = live_app
    for i in range(200):
        app.write(app.original.replace("Hello, World!", f"Hello, save {i}!"), atomically=i % 2 == 1)
        time.sleep(0.01)  # the pace of the saves is the scenario, not a wait
    app.serves("/", "Hello, save 199!")
    app.edit("import threading\n", "import threading\nimport time\ntime.sleep(30)\n")
    app.reported("reload stuck", timeout=10)
    sent = time.monotonic()
    app.process.proc.send_signal(signal.SIGINT)
    assert app.process.finish(timeout=5) == 0
    assert time.monotonic() - sent < 1.0
