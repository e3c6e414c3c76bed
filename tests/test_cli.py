"""The ``replkit`` command: ``serve``'s output, overrides, errors and shutdown."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import ROOT, Process, free_port, replkit_command, served_url


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
