"""Hot reload end to end: real saves to a copy of the guide's app under ``replkit serve``.

One ``/counter`` stream is opened first and kept open through every edit; it must still
receive all ten of its events, from the code it started with.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
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
        return wait_until(
            lambda: next((line for line in self.process.stderr_lines if fragment in line), None),
            timeout,
            f"a report containing {fragment!r}",
        )


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
