"""``GET /`` requests per second: replkit's default chain against a bare aiohttp handler.

wrk (one thread, 50 keep-alive connections) asks ``GET /`` of each server for a few
seconds, after a warm-up run of one second; the figure is wrk's requests per second. Each
server runs as its users run it: replkit with the guide's default interceptors and its
access log on (``replkit serve``), aiohttp with ``web.run_app``, Starlette and FastAPI on
uvicorn's defaults (its access log on). Two more replkit servers show where its time goes:
the same app with the access log off, and the router alone (no default interceptors, so no
secure headers, and no access log). And aiohttp doing by hand what replkit's defaults do
(the secure headers with a fresh CSP nonce, its access log on) gives the like-for-like
figure beside the bare handler the target is set against.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Mapping
from typing import Any

from bench.contenders import BARE_AIOHTTP, REQUESTS
from bench.procs import BenchError
from bench.scenario import Contender, Measure, Metric, Scenario, Target

CONNECTIONS = 50


def wrk(port: int, seconds: int) -> float:
    """wrk's requests per second for ``GET /`` over ``seconds``; :class:`BenchError` if any
    request failed or was not answered 200."""
    binary = shutil.which("wrk")
    if binary is None:
        raise BenchError("wrk is not installed (make bench-env installs it)")
    command = [binary, "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", f"http://127.0.0.1:{port}/"]
    out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30).stdout
    for problem in ("Non-2xx or 3xx responses", "Socket errors"):
        if problem in out:
            raise BenchError(f"wrk: {out.strip().splitlines()[-3:]}")
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if found is None:
        raise BenchError(f"wrk printed no rate: {out[-300:]}")
    return float(found[1])


def measure(contender: Contender, sizes: Mapping[str, Any]) -> dict[str, Measure]:
    """One wrk run against a fresh server."""
    with contender.server() as server:
        if sizes["warmup"]:
            wrk(server.port, sizes["warmup"])
        return {"rps": Measure(wrk(server.port, sizes["seconds"]))}


SCENARIO = Scenario(
    key="requests",
    title="GET / requests per second",
    how=__doc__.split("\n\n", 1)[1].strip(),
    metrics=(
        Metric(
            "rps",
            "GET / req/s",
            "req/s",
            higher_is_better=True,
            target=Target("≥ 0.8x bare aiohttp", at_least=0.8, versus=BARE_AIOHTTP.key),
        ),
    ),
    contenders=REQUESTS,
    measure=measure,
    sizes={"full": {"seconds": 2, "warmup": 1}, "smoke": {"seconds": 1, "warmup": 0}},
)
