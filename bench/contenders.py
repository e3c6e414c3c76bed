"""The servers the stream and request scenarios compare: replkit and its peers, each
running the benchmark's routes (:mod:`bench.apps.common`) as its users run an app."""

from __future__ import annotations

from dataclasses import replace

from bench.procs import PEERS_PYTHON, PROJECT_PYTHON
from bench.scenario import Contender


def _uvicorn(app: str, port: int) -> list[str]:
    return [PEERS_PYTHON, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)]


def _replkit(app: str, port: int) -> list[str]:
    return [PROJECT_PYTHON, "-m", "replkit", "serve", app,
            "--host", "127.0.0.1", "--port", str(port), "--no-watch"]  # fmt: skip


REPLKIT = Contender(
    "replkit", "replkit", lambda port: _replkit("bench.apps.replkit_app", port), replkit=True
)
REPLKIT_NO_LOG = Contender(
    "replkit_no_log",
    "replkit, access log off",
    lambda port: _replkit("bench.apps.replkit_app:without_access_log", port),
)
"""replkit with its access log off: what the log costs a request."""
REPLKIT_ROUTES = Contender(
    "replkit_routes",
    "replkit, router only",
    lambda port: _replkit("bench.apps.replkit_app:routes_only", port),
)
"""replkit with no default interceptors and no access log: its request path's floor."""
AIOHTTP_SSE = Contender(
    "aiohttp_sse",
    "aiohttp-sse",
    lambda port: [PEERS_PYTHON, "-m", "bench.peers.aiohttp_sse_app", str(port)],
)
BARE_AIOHTTP = Contender("aiohttp", "bare aiohttp", AIOHTTP_SSE.command)
"""The same process as :data:`AIOHTTP_SSE`: its ``GET /`` is a bare aiohttp handler."""
AIOHTTP_SAME_WORK = Contender(
    "aiohttp_same_work",
    "aiohttp, replkit's defaults by hand",
    lambda port: [*AIOHTTP_SSE.command(port), "--same-work"],
)
"""aiohttp doing for ``GET /`` what replkit's defaults do (secure headers with a fresh
nonce, an access log line): the like-for-like comparison beside the bare handler."""
BARE_STREAM = Contender(
    "aiohttp_stream",
    "bare aiohttp stream",
    lambda port: [*AIOHTTP_SSE.command(port), "--bare-idle"],
)
"""aiohttp alone: ``GET /idle`` a ``StreamResponse`` with hand-written heartbeats, no SSE
library. What an idle stream costs below any library built on aiohttp."""
SSE_STARLETTE = Contender(
    "sse_starlette", "sse-starlette", lambda port: _uvicorn("bench.peers.starlette_app:app", port)
)
FASTAPI = Contender(
    "fastapi",
    "FastAPI SSE",
    lambda port: _uvicorn("bench.peers.fastapi_app:app", port),
    scale=0.1,  # about ten times slower per event than the others
)

STREAMING = (REPLKIT, AIOHTTP_SSE, SSE_STARLETTE, FASTAPI)
"""The contenders of the event-stream scenarios."""
IDLE = (*STREAMING, BARE_STREAM)
"""The contenders of the scenarios that only open idle streams, with aiohttp's floor."""
REQUESTS = (
    REPLKIT,
    REPLKIT_NO_LOG,
    REPLKIT_ROUTES,
    BARE_AIOHTTP,
    AIOHTTP_SAME_WORK,
    replace(SSE_STARLETTE, key="starlette", title="Starlette"),
    replace(FASTAPI, title="FastAPI", scale=1.0),
)
"""The contenders of the requests-per-second scenario."""
