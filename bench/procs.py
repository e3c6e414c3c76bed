"""The processes under test: start a server on a free loopback port, read its memory and CPU
from ``/proc``, stop it and time its exit; and the file descriptor limit the clients need.

Every server starts in a session of its own, its output going to a log file (a pipe nobody
reads would stall it), and is stopped by its pid; whatever it started (a reloader's worker)
is stopped through its session's process group, whose id is that pid.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, Self

ROOT = Path(__file__).resolve().parent.parent
PROJECT_PYTHON = sys.executable
"""replkit's interpreter: the project's ``.venv``, which runs the benchmark itself."""
PEERS_VENV = ROOT / "bench" / ".venv-peers"
PEERS_PYTHON = str(PEERS_VENV / "bin" / "python")
"""The peers' interpreter (``make bench-env``), with no replkit in it."""

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """A measurement that could not be made: a server that did not start, a deadline missed."""


def free_port() -> int:
    """A port nothing listens on now, on 127.0.0.1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def raise_fd_limit() -> int:
    """Raise this process's open-file limit to its hard limit (servers started afterwards
    inherit it): 10,000 streams need 10,000 sockets on each side. Returns the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def poll(predicate: Callable[[], Any], timeout: float, what: str, step: float = 0.01) -> Any:
    """Call ``predicate`` until it returns something truthy; :class:`BenchError` after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(step)


def http(
    port: int, path: str = "/", method: str = "GET", timeout: float = 10.0
) -> tuple[int, bytes]:
    """One HTTP/1.0 request to 127.0.0.1 (the server closes the connection after the body, so
    the body is whatever comes until then): ``(status, body)``; ``(0, b"")`` when the
    connection is refused or cut."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            head = f"{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n"
            sock.sendall(f"{head}Content-Length: 0\r\n\r\n".encode())
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    except OSError:
        return 0, b""
    response = b"".join(chunks)
    head_end = response.find(b"\r\n\r\n")
    try:
        status = int(response.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return 0, b""
    return status, response[head_end + 4 :] if head_end >= 0 else b""


class Server:
    """A server process under test, answering ``GET /`` once started."""

    def __init__(
        self,
        argv: Sequence[str],
        port: int,
        *,
        name: str,
        cwd: Path = ROOT,
        env: dict[str, str] | None = None,
    ) -> None:
        self.argv = [str(arg) for arg in argv]
        self.port = port
        self.name = name
        self.cwd = cwd
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        """The server's process id."""
        assert self.proc is not None, "not started"
        return self.proc.pid

    def start(self, timeout: float = 30.0) -> Self:
        """Start the process and return once ``GET /`` answers 200."""
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        # The project's root on the path, for `bench.apps` and `bench.peers`; nothing else
        # of the runner's environment (its venv) leaks into the peers'.
        env["PYTHONPATH"] = str(ROOT)
        env.pop("VIRTUAL_ENV", None)
        self.proc = subprocess.Popen(
            self.argv,
            cwd=self.cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def answers() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise BenchError(f"{self.name} exited with {self.proc.returncode}: {self.log()}")
            return http(self.port, timeout=2)[0] == 200

        poll(answers, timeout, f"{self.name} to answer on port {self.port}", step=0.02)
        return self

    def log(self, tail: int = 800) -> str:
        """The end of what the server printed."""
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-tail:]

    def rss_kib(self) -> int:
        """Resident memory now, in KiB (``VmRSS``)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise BenchError(f"no VmRSS for {self.name}")

    def cpu_seconds(self) -> float:
        """CPU time used so far, user and system, in seconds."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()  # the name in parentheses may have spaces
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime

    def terminate(self, timeout: float) -> float | None:
        """SIGTERM, as a service manager or Ctrl-C stops a server; the seconds until the
        process exited, or ``None`` if it had not within ``timeout`` (it is then killed)."""
        assert self.proc is not None
        began = time.perf_counter()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None
        return time.perf_counter() - began

    def close(self) -> None:
        """Stop the server if it still runs, and anything left in its process group. Not
        a measurement: a server still busy a second after SIGTERM is killed."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.terminate(1.0)
            with contextlib.suppress(ProcessLookupError, PermissionError):  # none left
                os.killpg(self.proc.pid, signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *_: object) -> None:
        self.close()
