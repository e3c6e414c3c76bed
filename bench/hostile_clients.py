"""What hostile clients cost ``replkit serve``: figures, not assertions.

Serves ``app.sse_demo`` in a child process, then measures (1) how long a normal request
takes while N idle connections are held open, and how many of them the server closed to
make room, and (2) how much the server's resident memory grows while K clients POST a
1 MiB body each, at once, to a path that has no route (the body is never read).
Run: ``python -m bench.hostile_clients [--idle 10000] [--posts 300]``.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    args = _parser().parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = args.idle + 500
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    server = subprocess.Popen(
        [sys.executable, "-m", "replkit", "serve", "app.sse_demo", "--port", "0", "--no-watch"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().split()[2]
        _idle_connections(url, args.idle)
        _bodies_to_a_404(url, server.pid, args.posts)
    finally:
        server.terminate()
        server.wait(timeout=10)
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    print(f"({os.cpu_count()} CPUs, file descriptor limit {limit})")


def _get(url: str) -> float:
    began = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as response:
        response.read()
    return time.perf_counter() - began


def _idle_connections(url: str, count: int) -> None:
    port = int(url.rsplit(":", 1)[1])
    sockets = []
    began = time.perf_counter()
    for _ in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        if sock.connect_ex(("127.0.0.1", port)) not in (0, errno.EINPROGRESS):
            sock.close()
            break
        sockets.append(sock)
    first = _get(url)
    settled = time.perf_counter() - began
    times = [_get(url) for _ in range(20)]
    closed = 0
    for sock in sockets:
        try:
            closed += sock.recv(1, socket.MSG_DONTWAIT | socket.MSG_PEEK) == b""
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
        sock.close()
    print(f"{len(sockets)} idle connections held; the server closed {closed} of them")
    print(f"  a normal request answered {settled:.2f} s after the first connect")
    print(f"  (that request itself: {first * 1000:.0f} ms)")
    print(
        f"  then 20 requests: median {statistics.median(times) * 1000:.1f} ms, "
        f"max {max(times) * 1000:.1f} ms"
    )


def _status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) // 1024
    raise LookupError(field)


def _bodies_to_a_404(url: str, pid: int, count: int) -> None:
    body = b"x" * 1024 * 1024
    rss = _status(pid, "VmRSS")

    async def post_all() -> list[int]:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

            async def post(i: int) -> int:
                async with session.post(f"{url}/nowhere/{i}", data=body) as response:
                    await response.read()
                    return response.status

            return await asyncio.gather(*(post(i) for i in range(count)))

    began = time.perf_counter()
    statuses = asyncio.run(post_all())
    took = time.perf_counter() - began
    print(f"{count} concurrent 1 MiB POSTs to a 404 path in {took:.2f} s: {set(statuses)}")
    print(
        f"  server RSS {rss} MB before, peak {_status(pid, 'VmHWM')} MB, "
        f"{_status(pid, 'VmRSS')} MB after"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=int, default=10_000, help="idle connections to hold")
    parser.add_argument("--posts", type=int, default=300, help="concurrent 1 MiB POSTs")
    return parser


if __name__ == "__main__":
    main()
