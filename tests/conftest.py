"""Fixtures shared by the tests: real servers on free loopback ports, real processes.

Every wait is an event or a poll with a deadline; every server, process and thread a test
starts is stopped in teardown.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import queue
import socket
import subprocess
import sys
import textwrap
import threading
import time
import types
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from replkit import connector as conn
from replkit.aiohttp import AiohttpConnector, create_connector

ROOT = Path(__file__).resolve().parent.parent


def wait_until(predicate: Callable[[], Any], timeout: float = 5.0, what: str = "") -> Any:
    """Poll ``predicate`` until it returns something truthy, failing after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(0.01)


async def until(predicate: Callable[[], Any], timeout: float = 5.0, what: str = "") -> Any:
    """:func:`wait_until` for async tests: polls without blocking the event loop."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        await asyncio.sleep(0.01)
    return value


class Hammer:
    """Calls ``fetch`` in a loop on a thread while in the ``with`` block: what it returned, what
    it raised. Used to prove that no request is refused while a server is swapped."""

    def __init__(self, fetch: Callable[[], Any]) -> None:
        self.fetch = fetch
        self.answers: set[Any] = set()
        self.failures: list[BaseException] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hammer")

    def _run(self) -> None:
        while not self._done.is_set():
            try:
                self.answers.add(self.fetch())
            except Exception as err:  # a refused connection lands here
                self.failures.append(err)

    def __enter__(self) -> Hammer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self._thread.join(timeout=5)


def app_map(routes: Any, **extra: Any) -> dict[str, Any]:
    """A connector map on 127.0.0.1, any free port, with the default interceptors and routes."""
    connector_map = conn.default_connector_map(0, "127.0.0.1") | extra
    connector_map = conn.with_default_interceptors(connector_map)
    return conn.with_routes(connector_map, routes)


def server_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "replkit-server"]


@pytest.fixture
def serve() -> Iterator[Callable[..., AiohttpConnector]]:
    """Start connectors (from a map or a route table) and stop them all after the test."""
    started: list[AiohttpConnector] = []

    def start(routes_or_map: Any, **extra: Any) -> AiohttpConnector:
        connector_map = (
            routes_or_map if isinstance(routes_or_map, dict) else app_map(routes_or_map, **extra)
        )
        connector = create_connector(connector_map, {"shutdown_grace": 0.5})
        # Started from a worker thread, the server runs on replkit's background loop even
        # when the test itself runs in an event loop, which closes before this teardown.
        with ThreadPoolExecutor(1) as worker:
            started.append(worker.submit(connector.start).result())
        return connector

    yield start
    for connector in started:
        connector.stop()
    wait_until(lambda: not server_threads(), what="the replkit-server thread to end")


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("REPLKIT_PORT", "REPLKIT_HOST"):
        monkeypatch.delenv(name, raising=False)


class Process:
    """A child process whose output lines are collected as they arrive."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT):
        self.proc = subprocess.Popen(
            args,
            cwd=cwd,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.stdout: queue.Queue[str] = queue.Queue()
        self.stderr_lines: list[str] = []
        self._readers = [
            threading.Thread(
                target=self._pump, args=(self.proc.stdout, self.stdout.put), daemon=True
            ),
            threading.Thread(
                target=self._pump, args=(self.proc.stderr, self.stderr_lines.append), daemon=True
            ),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _pump(stream: Any, sink: Callable[[str], None]) -> None:
        for line in stream:
            sink(line.rstrip("\n"))

    def next_line(self, timeout: float = 10.0) -> str:
        """The next stdout line, failing after ``timeout`` s (with stderr in the message)."""
        try:
            return self.stdout.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(
                f"no output within {timeout} s; stderr: {self.stderr_lines[-10:]}"
            ) from None

    def wait_for_line(self, predicate: Callable[[str], bool], timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            line = self.next_line(max(0.01, deadline - time.monotonic()))
            if predicate(line):
                return line

    def finish(self, timeout: float = 10.0) -> int:
        """Wait for the process to exit and for its output to be read."""
        code = self.proc.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=timeout)
        return code

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        for reader in self._readers:
            reader.join(timeout=5)


@pytest.fixture
def spawn() -> Iterator[Callable[..., Process]]:
    """Start child processes; each one still running at teardown is terminated by pid."""
    processes: list[Process] = []

    def start(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> Process:
        process = Process(list(args), env=env, cwd=cwd)
        processes.append(process)
        return process

    yield start
    for process in processes:
        process.stop()


def run_python(script: str) -> subprocess.CompletedProcess[str]:
    """``script`` run to its end by this Python in a process of its own, in the project's
    directory, for what changes a whole process (its logging, a fork); its output kept."""
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT
    )


def replkit_command(*args: str) -> list[str]:
    """The ``replkit`` command run by this interpreter."""
    return [sys.executable, "-m", "replkit", *args]


@pytest.fixture
def sse_demo(spawn: Callable[..., Process]) -> str:
    """``replkit serve app.sse_demo`` on localhost and a free port; returns its base URL."""
    process = spawn(*replkit_command("serve", "app.sse_demo", "--port", "0", "--no-watch"))
    line = process.next_line()
    assert line.startswith("serving on http://localhost:"), line
    return served_url(line)


def served_url(line: str) -> str:
    """The URL in ``replkit serve``'s first line, ``serving on URL (mode)``."""
    assert line.startswith("serving on "), line
    return line.split()[2]


SAVES_ITSELF = "import pathlib\nVALUE = 1\npathlib.Path(__file__).write_text('VALUE = 2\\n')\n"
"""A module's source that saves ``VALUE = 2`` over itself as it runs ``VALUE = 1``: a save
made right after Python read the file, the worst moment for a reloader."""


@dataclass
class Pkg:
    """A throwaway package ``name`` in directory ``root``."""

    name: str
    root: Path

    def write(self, relpath: str, source: str) -> Path:
        path = self.root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
        importlib.invalidate_caches()
        return path

    def dotted(self, sub: str = "") -> str:
        return f"{self.name}.{sub}" if sub else self.name

    def load(self, sub: str = "") -> types.ModuleType:
        return importlib.import_module(self.dotted(sub))

    def current(self, sub: str = "") -> types.ModuleType:
        return sys.modules[self.dotted(sub)]


@pytest.fixture
def pkg(tmp_path: Path) -> Iterator[Pkg]:
    name = f"rk_{uuid.uuid4().hex[:12]}"
    root = tmp_path / name
    root.mkdir()
    (root / "__init__.py").write_text("")
    main = sys.modules["__main__"].__dict__
    main_names = set(main)
    sys.path.insert(0, str(tmp_path))
    yield Pkg(name, root)
    sys.path.remove(str(tmp_path))
    for key in set(main) - main_names:
        del main[key]
    for module in [m for m in sys.modules if m == name or m.startswith(f"{name}.")]:
        del sys.modules[module]


class RedisServer:
    """A real ``redis-server`` of our own on a free loopback port, which a test may stop and
    start again on the same port (with ``persistent``, its data survives the restart)."""

    def __init__(self, directory: Path, persistent: bool = False) -> None:
        self.directory = directory
        self.persistent = persistent
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else []
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--dir", str(self.directory), *persistence],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_until(self.answers, 10, f"redis-server on port {self.port}")

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server started for the test and stopped after it."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


def free_port() -> int:
    """A port nothing listens on now, on 127.0.0.1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
