"""The guide's transcript, reproduced against ``replkit serve app.sse_demo``, and its
JavaScript client run in a real browser.

``curl``, the npm ``eventsource`` package and Chromium are the clients: all independent of
replkit, the last two following the WHATWG EventSource standard.
"""

from __future__ import annotations

import itertools
import json
import os
import select
import subprocess
import time
from collections.abc import Callable

from conftest import ROOT, app_map

import app.sse_demo as sse_demo
from replkit.aiohttp import AiohttpConnector

COUNTER_TRANSCRIPT = b"".join(b"event: counter\ndata: %d\n\n" % i for i in range(10))


def test_home_page_prints_hello_world(sse_demo: str) -> None:
    result = subprocess.run(
        ["curl", "-sN", f"{sse_demo}/"], capture_output=True, timeout=10, check=True
    )
    assert result.stdout == b"Hello, World!"


def read_with_arrival_times(url: str, timeout: float = 20.0) -> list[tuple[float, bytes]]:
    """Run ``curl -sN url`` and return each chunk of its output with when it arrived."""
    started = time.monotonic()
    curl = subprocess.Popen(["curl", "-sN", url], stdout=subprocess.PIPE)
    assert curl.stdout is not None
    chunks: list[tuple[float, bytes]] = []
    try:
        while time.monotonic() - started < timeout:
            ready, _, _ = select.select([curl.stdout], [], [], 0.5)
            if not ready:
                continue
            data = os.read(curl.stdout.fileno(), 65536)
            if not data:
                break
            chunks.append((time.monotonic() - started, data))
        assert curl.wait(timeout=5) == 0
    finally:
        if curl.poll() is None:
            curl.kill()
            curl.wait()
    chunks.append((time.monotonic() - started, b""))  # when curl saw the end
    return chunks


def test_counter_transcript_byte_for_byte_one_second_apart(sse_demo: str) -> None:
    chunks = read_with_arrival_times(f"{sse_demo}/counter")

    assert b"".join(data for _, data in chunks) == COUNTER_TRANSCRIPT

    # When each event became complete, from the cumulative byte count.
    ends, received, arrivals = [], 0, []
    for i in range(10):
        received += len(b"event: counter\ndata: %d\n\n" % i)
        ends.append(received)
    total = 0
    for at, data in chunks[:-1]:
        total += len(data)
        arrivals.extend(at for end in ends[len(arrivals) :] if end <= total)
    assert len(arrivals) == 10
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert all(0.8 < gap < 1.5 for gap in gaps), gaps
    closed_after = chunks[-1][0] - arrivals[-1]
    assert 0.8 < closed_after < 1.5, closed_after


def test_eventsource_client_receives_the_ten_counter_events(sse_demo: str) -> None:
    result = subprocess.run(
        [
            "node",
            str(ROOT / "tests/js/eventsource-client.mjs"),
            f"{sse_demo}/counter",
            "counter",
            "10",
        ],
        capture_output=True,
        text=True,
        timeout=40,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    messages = [json.loads(line) for line in result.stdout.splitlines()]
    assert messages[0] == {"open": True}
    events = [m for m in messages if m.get("type") == "counter"]
    assert [e["data"] for e in events] == [str(i) for i in range(10)]


# The guide's "Connecting from JavaScript" snippet, verbatim, on a page of its own; the
# script tag carries the request's CSP nonce, which the default secure headers allow.
GUIDE_PAGE = """<!doctype html>
<title>Counter</title>
<script nonce="NONCE">
const eventSource = new EventSource("/counter");
eventSource.addEventListener("counter", (event) => {
    console.log("Counter:", event.data);
});
</script>
"""


def test_the_guides_javascript_in_a_real_browser(serve: Callable[..., AiohttpConnector]) -> None:
    def page(request: dict) -> dict:
        headers = {"Content-Type": "text/html; charset=UTF-8"}
        return {
            "status": 200,
            "headers": headers,
            "body": GUIDE_PAGE.replace("NONCE", request["csp_nonce"]),
        }

    server = serve(app_map([*sse_demo.routes, ("/page", "get", page)]))
    result = subprocess.run(
        ["node", str(ROOT / "tests/js/browser-console.mjs"), f"{server.url}/page", "Counter: 9"],
        capture_output=True,
        text=True,
        timeout=40,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    logged = [json.loads(line).get("console", "") for line in result.stdout.splitlines()]
    assert [line for line in logged if line.startswith("Counter:")] == [
        f"Counter: {i}" for i in range(10)
    ]
