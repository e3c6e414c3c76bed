"""The ``replkit`` command: ``serve``'s output, overrides, errors and shutdown."""

from __future__ import annotations

import gc
import json
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import ROOT, Process, free_port, replkit_command, run_python, served_url

from replkit.server import SERVING_GC_THRESHOLD, tune_collector


def run_replkit(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        replkit_command(*args), cwd=cwd, env=env, capture_output=True, text=True, timeout=30
    )


def test_serve_prints_where_it_listens_and_serves(spawn: Callable[..., Process]) -> None:
    port = free_port()
    process = spawn(
        *replkit_command("serve", "app.sse_demo", "--host", "127.0.0.1", "--port", str(port))
    )
    assert process.next_line() == (
        f"serving on http://127.0.0.1:{port} "
        f"(development mode, reloading on save under {ROOT / 'app'})"
    )
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
        assert response.read() == b"Hello, World!"


def test_environment_overrides_the_connector_map(spawn: Callable[..., Process]) -> None:
    port = free_port()
    process = spawn(
        *replkit_command("serve", "app.sse_demo", "--no-watch"),
        env={"REPLKIT_PORT": str(port), "REPLKIT_HOST": "127.0.0.1"},
    )
    assert process.next_line() == f"serving on http://127.0.0.1:{port} (not watching files)"


def test_python_dash_m_replkit_is_the_same_command() -> None:
    result = run_replkit("--help")
    assert result.returncode == 0 and "serve" in result.stdout and "repl" in result.stdout


def test_a_taken_port_is_one_line_naming_it() -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        result = run_replkit("serve", "app.sse_demo", "--host", "127.0.0.1", "--port", str(port))
    assert result.returncode == 1
    assert result.stderr == f"replkit: cannot listen on 127.0.0.1:{port}: address already in use\n"
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("files", "module", "message"),
    [
        ({}, "no_such_app", "replkit: no module named 'no_such_app' (searched {cwd} and sys.path)"),
        (
            {"broken.py": "def f(:\n"},
            "broken",
            "replkit: importing broken: broken.py:1: SyntaxError: invalid syntax",
        ),
        (
            {"imports.py": "x = 1\nimport missing_dependency_xyz\n"},
            "imports",
            "replkit: importing imports: imports.py:2: ModuleNotFoundError: "
            "No module named 'missing_dependency_xyz'",
        ),
        (
            {"plain.py": "x = 1\n"},
            "plain",
            "replkit: module plain has no create_connector; "
            "for an aiohttp app, name its factory: MODULE:create_app",
        ),
    ],
)
def test_a_bad_module_is_one_line(
    tmp_path: Path, files: dict[str, str], module: str, message: str
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    result = run_replkit("serve", module, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr == message.format(cwd=tmp_path) + "\n"
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_it_within_a_second_with_a_stream_open(
    spawn: Callable[..., Process], signum: signal.Signals
) -> None:
    process = spawn(*replkit_command("serve", "app.sse_demo", "--port", "0"))
    url = served_url(process.next_line())
    stream = urllib.request.urlopen(f"{url}/counter", timeout=5)
    assert stream.readline() == b"event: counter\n"
    sent = time.monotonic()
    process.proc.send_signal(signum)
    assert process.finish(timeout=5) == 0
    assert time.monotonic() - sent < 1.0
    stream.close()


def test_serve_tunes_the_collector_for_serving(
    spawn: Callable[..., Process], tmp_path: Path
) -> None:
    # A plain aiohttp app, shaped unlike the demo, reports the collector it runs under.
    (tmp_path / "gcapp.py").write_text(
        "import gc\n"
        "from aiohttp import web\n"
        "async def threshold(request):\n"
        "    return web.json_response(list(gc.get_threshold()))\n"
        "def create_app():\n"
        "    app = web.Application()\n"
        "    app.router.add_get('/', threshold)\n"
        "    return app\n"
    )
    process = spawn(
        *replkit_command("serve", "gcapp:create_app", "--port", "0", "--no-watch"), cwd=tmp_path
    )
    url = served_url(process.next_line())
    with urllib.request.urlopen(f"{url}/", timeout=5) as response:
        young, *older = json.loads(response.read())
    assert young == SERVING_GC_THRESHOLD
    assert older == list(gc.get_threshold()[1:])  # the older generations keep the defaults


@pytest.mark.parametrize(
    ("before", "after"),
    [(700, SERVING_GC_THRESHOLD), (500_000, 500_000), (0, 0)],
    ids=["default raised", "higher kept", "disabled kept"],
)
def test_tune_collector_only_raises_the_young_threshold(before: int, after: int) -> None:
    saved = gc.get_threshold()
    try:
        gc.set_threshold(before, 10, 10)
        tune_collector()
        assert gc.get_threshold() == (after, 10, 10)
    finally:
        gc.set_threshold(*saved)


def test_the_log_lines_are_what_the_format_says_with_or_without_a_traceback() -> None:
    # configure_logging() changes the process's logging: a child process of its own.
    script = (
        "import logging, sys\n"
        "from replkit.cli import configure_logging\n"
        "configure_logging()\n"
        "logging.getLogger('replkit.access').info('%s %s %d', 'GET', '/a', 200)\n"
        "try:\n"
        "    raise ValueError('boom')\n"
        "except ValueError:\n"
        "    logging.getLogger('replkit.server').exception('failed %s', 'here')\n"
    )
    out = run_python(script)
    lines = out.stderr.splitlines()
    assert lines[0] == "INFO replkit.access: GET /a 200"
    assert lines[1] == "ERROR replkit.server: failed here"
    assert lines[2] == "Traceback (most recent call last):" and lines[-1] == "ValueError: boom"
