"""Many worker processes serving one port: ``replkit serve APP --workers N --no-watch``.

The supervisor binds the listening sockets once and starts N workers that inherit them,
each a fresh ``python -m replkit worker APP`` process that builds the app and accepts
connections on the shared sockets; the kernel spreads the connections among them. A worker
that dies is replaced; one that keeps dying at start stops the whole group with one line.
SIGTERM or Ctrl-C stops every worker within a second.

Workers never watch files and never reload: development, with the REPL and hot reload, is
single-process. Topics that must reach the clients of every worker live in Redis (see
:mod:`replkit.sse`).
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
import time
from collections.abc import Sequence

from replkit.errors import ReplkitError
from replkit.server import bind
from replkit.session import Session

__all__ = ["run_worker", "supervise"]

STOP_WITHIN = 0.9
"""Seconds workers get to finish after SIGTERM before they are killed."""

QUICK_DEATH = 2.0
"""A worker that dies this many seconds after it started is taken to be failing at start."""

QUICK_DEATHS_ALLOWED = 5
"""Failing starts in a row after which the supervisor gives up."""


async def supervise(session: Session, count: int) -> int:
    """Serve ``session``'s app with ``count`` workers until a signal; the exit status."""
    if count < 1:
        raise ReplkitError(f"--workers must be at least 1, not {count}")
    probe = session.build()
    host = session.host or probe.host
    port = probe.port if session.port is None else session.port
    sockets = bind(host, port)
    for sock in sockets:
        sock.set_inheritable(True)
    fds = ",".join(str(sock.fileno()) for sock in sockets)
    command = [sys.executable, "-m", "replkit", "worker", session.spec, "--fds", fds]
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    bound = sockets[0].getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    print(
        f"serving on http://{shown}:{bound} with {count} workers (not watching files)", flush=True
    )
    group = _Group(command, [sock.fileno() for sock in sockets], stopping)
    try:
        status = await group.run(count)
    finally:
        for sock in sockets:
            sock.close()
    return status


class _Group:
    """The workers, each kept running until the group stops."""

    def __init__(self, command: list[str], fds: list[int], stopping: asyncio.Event) -> None:
        self.command = command
        self.fds = fds
        self.stopping = stopping
        self.workers: set[asyncio.subprocess.Process] = set()
        self.failure: str | None = None

    async def run(self, count: int) -> int:
        keepers = [asyncio.create_task(self._keep(slot)) for slot in range(count)]
        await self.stopping.wait()
        await self._stop_all()
        for keeper in keepers:
            keeper.cancel()
        await asyncio.gather(*keepers, return_exceptions=True)
        if self.failure is not None:
            print(f"replkit: {self.failure}", file=sys.stderr, flush=True)
            return 1
        return 0

    async def _keep(self, slot: int) -> None:
        quick_deaths = 0
        while not self.stopping.is_set():
            started = time.monotonic()
            worker = await asyncio.create_subprocess_exec(*self.command, pass_fds=self.fds)
            self.workers.add(worker)
            try:
                status = await worker.wait()
            finally:
                self.workers.discard(worker)
            if self.stopping.is_set():
                return
            quick_deaths = quick_deaths + 1 if time.monotonic() - started < QUICK_DEATH else 0
            if quick_deaths >= QUICK_DEATHS_ALLOWED:
                self.failure = (
                    f"worker {slot} exited with status {status} right after starting, "
                    f"{quick_deaths} times in a row; stopping"
                )
                self.stopping.set()
                return
            print(
                f"replkit: worker {worker.pid} exited with status {status}; starting another",
                file=sys.stderr,
                flush=True,
            )

    async def _stop_all(self) -> None:
        for worker in list(self.workers):
            if worker.returncode is None:
                worker.terminate()
        deadline = time.monotonic() + STOP_WITHIN
        for worker in list(self.workers):
            try:
                await asyncio.wait_for(worker.wait(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                worker.kill()
                await worker.wait()


async def run_worker(session: Session, fds: Sequence[int]) -> int:
    """Serve ``session``'s app on the inherited listening sockets ``fds`` until a signal."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    connector = session.build()
    connector.start(sockets=[socket.socket(fileno=fd) for fd in fds])
    try:
        await stopping.wait()
    finally:
        # Workers are stopped within STOP_WITHIN seconds: end streams, keep the rest short.
        connector.shutdown_grace = min(connector.shutdown_grace, STOP_WITHIN / 2)
        await connector.stop_async()
    return 0
