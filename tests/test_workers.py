"""``replkit serve APP --workers N --no-watch``: worker processes sharing one port."""

from __future__ import annotations

import os
import signal
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from conftest import Process, replkit_command, served_url, wait_until

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
