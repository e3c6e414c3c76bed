"""Save -> new code served over HTTP, end to end, with an event stream kept open.

Copies the guide's app to a temporary directory, runs ``replkit serve app.sse_demo`` there,
opens a ``/counter`` stream, then saves ``app/sse_demo.py`` N times with a new home page text
and polls ``/`` (every 2 ms) until that text is served. Prints the median and p90 of the
latency, and checks that the stream still got its ten events.
Run: ``python benchmarks/save_to_served.py [--n 30]``.
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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def fetch(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.read()
    except OSError:
        return b""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=30, help="number of saves (default 30)")
    n = parser.parse_args().n
    with tempfile.TemporaryDirectory() as directory:
        shutil.copytree(ROOT / "app", Path(directory) / "app")
        source = Path(directory) / "app" / "sse_demo.py"
        original = source.read_text()
        server = subprocess.Popen(
            [sys.executable, "-m", "replkit", "serve", "app.sse_demo", "--port", "0"],
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
                target=lambda: streamed.append(fetch(f"{url}/counter")), daemon=True
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
                        raise SystemExit(f"save {i} was not served within 5 s")
                    time.sleep(0.002)
                latencies.append((time.perf_counter() - saved) * 1000)
            reader.join(timeout=15)
        finally:
            server.terminate()
            server.wait(timeout=5)
    events = b"".join(streamed).count(b"event: counter\n")
    cut = statistics.quantiles(latencies, n=10)
    print(
        f"save -> served over HTTP, {n} saves: median {statistics.median(latencies):.1f} ms, "
        f"p90 {cut[-1]:.1f} ms, max {max(latencies):.1f} ms"
    )
    print(f"stream opened before the saves received {events} of 10 events")


if __name__ == "__main__":
    main()
