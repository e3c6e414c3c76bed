"""Save -> new code served, with a stream open: replkit's in-process reload against the
reloaders that restart the process.

Each app is copied into a scratch directory and served by its reloader. A first save,
repeated until served, warms the reloader up (uvicorn starts watching only after its server
answers). Then 10 plain saves with no stream open give what the reload itself costs. Then
the client keeps one event stream of the app open and makes 20 saves, plain writes and
atomic ones (a temporary file renamed over it, as many editors save) alternating: the
figures are the median and p95 (nearest rank) of each kind. A save's time runs from the
write until ``GET /``, polled every 2 ms, serves the new text. After each save the stream
is checked: one that ended without its last chunk was dropped (counted, and opened again);
one that ended cleanly is opened again. A save not served within 5 s ends the contender's
run ("> 5000 ms"). replkit serves three shapes of app: the guide's (``app/sse_demo.py``),
one whose routes a helper builds from a handler in another module, and a plain aiohttp app
with an aiohttp-sse stream, which aiohttp-devtools and watchfiles serve too; uvicorn serves
a Starlette app with an sse-starlette stream. Each reloader runs with its defaults.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.client import StreamClient, Streams, open_streams
from bench.procs import PEERS_PYTHON, PEERS_VENV, PROJECT_PYTHON, ROOT, free_port, http
from bench.scenario import Contender, Measure, Metric, Scenario

PATIENCE = 5.0
POLL = 0.002
PACE = 0.05  # between a save served and the next one


@dataclass(frozen=True)
class App:
    """What a contender serves: files copied into the scratch directory (source under the
    project -> name there), the one each save edits, the path of its event stream."""

    files: Mapping[str, str]
    edited: str
    stream: str


def _replkit(spec: str) -> Any:
    return lambda port: [PROJECT_PYTHON, "-m", "replkit", "serve", spec,
                         "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip


WEB_APP = {"bench/apps/reload_aiohttp.py": "web_app.py"}
SHAPES = ("__init__.py", "handlers.py", "app.py")
CONTENDERS = (
    Contender("replkit_guide", "replkit, the guide's app", _replkit("app.sse_demo"), True),
    Contender("replkit_helper", "replkit, helper-built app", _replkit("shapes.app"), True),
    Contender(
        "replkit_aiohttp", "replkit, plain aiohttp app", _replkit("web_app:create_app"), True
    ),
    Contender(
        "uvicorn",
        "uvicorn --reload",
        lambda port: [PEERS_PYTHON, "-m", "uvicorn", "main:app", "--reload",
                      "--host", "127.0.0.1", "--port", str(port)],
    ),
    Contender(
        "adev",
        "adev runserver",
        lambda port: [PEERS_VENV / "bin" / "adev", "runserver", "web_app.py", "--port", str(port),
                      "--aux-port", str(free_port()), "--no-livereload"],
    ),
    Contender(
        "run_process",
        "watchfiles run_process",
        lambda port: [PEERS_PYTHON, ROOT / "bench" / "peers" / "watchfiles_runner.py", str(port)],
    ),
)  # fmt: skip
APPS = {
    "replkit_guide": App(
        {f"app/{p.name}": f"app/{p.name}" for p in (ROOT / "app").iterdir() if p.is_file()},
        "app/sse_demo.py",
        "/counter",
    ),
    "replkit_helper": App(
        {f"bench/apps/shapes/{name}": f"shapes/{name}" for name in SHAPES},
        "shapes/handlers.py",
        "/ticks",
    ),
    "replkit_aiohttp": App(WEB_APP, "web_app.py", "/ticks"),
    "uvicorn": App({"bench/peers/reload_starlette.py": "main.py"}, "main.py", "/ticks"),
    "adev": App(WEB_APP, "web_app.py", "/ticks"),
    "run_process": App(WEB_APP, "web_app.py", "/ticks"),
}


KEYS = ("quiet_ms", "plain_ms", "plain_p95", "atomic_ms", "atomic_p95")
"""The latencies measured, in milliseconds."""


class _Stuck(Exception):
    """A save that was not served within :data:`PATIENCE` seconds."""


def save(path: Path, text: str, *, atomic: bool) -> None:
    """Write ``text`` to ``path`` in place, or by renaming a temporary file over it."""
    if atomic:
        temporary = path.with_name(f".{path.name}.tmp")
        temporary.write_text(text)
        os.replace(temporary, path)
    else:
        path.write_text(text)


class _Watched:
    """The one stream kept open through the saves, and how many times it was dropped."""

    def __init__(self, port: int, path: str) -> None:
        self.port, self.path = port, path
        self.client: StreamClient | None = None
        self.dropped = 0

    async def check(self) -> None:
        """Count a dropped stream; open a new one if the last has ended."""
        if self.client is not None and self.client.ended_at is None:
            return
        if self.client is not None and not self.client.clean_end:
            self.dropped += 1
        streams = await open_streams(self.port, self.path, 1, Streams(), timeout=PATIENCE)
        self.client = streams.clients[0]

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


async def _save_served(
    port: int, source: Path, original: str, i: int, atomic: bool, patience: float
) -> float:
    """Save the ``i``-th new text; the milliseconds until ``GET /`` serves it."""
    text = f"Hello, save {i}!"
    began = time.perf_counter()
    save(source, original.replace("Hello, World!", text), atomic=atomic)
    deadline = time.monotonic() + patience
    while (await asyncio.to_thread(http, port, "/", "GET", 2.0))[1] != text.encode():
        if time.monotonic() > deadline:
            raise _Stuck
        await asyncio.sleep(POLL)
    served = (time.perf_counter() - began) * 1000
    await asyncio.sleep(PACE)
    return served


async def _warm_up(port: int, source: Path, original: str) -> None:
    """Save until a save is served: a reloader may start watching only after its server
    answers, and the first reload does the most work. Not measured."""
    deadline = time.monotonic() + 3 * PATIENCE
    for attempt in itertools.count():
        try:
            await _save_served(port, source, original, -1 - attempt, False, 1.0)
            return
        except _Stuck:
            if time.monotonic() > deadline:
                raise


async def _saves(port: int, source: Path, app: App, sizes: Mapping[str, Any]) -> dict[str, Measure]:
    quiet_edits, edits, patience = sizes["quiet_edits"], sizes["edits"], sizes["patience"]
    original = source.read_text()
    await _warm_up(port, source, original)
    quiet: list[float] = []
    latencies: dict[str, list[float]] = {"plain": [], "atomic": []}
    watched = _Watched(port, app.stream)
    try:
        for i in range(quiet_edits):  # first with no stream open: what the reload costs
            quiet.append(await _save_served(port, source, original, i, False, patience))
        await watched.check()
        for i in range(quiet_edits, quiet_edits + edits):
            atomic = bool(i % 2)  # plain and atomic saves alternate
            latency = await _save_served(port, source, original, i, atomic, patience)
            latencies["atomic" if atomic else "plain"].append(latency)
            await watched.check()
    except _Stuck:
        note = f"a save was not served within {patience:g} s"
        stuck = Measure(patience * 1000, over=True, note=note)
        done = {"quiet_ms": Measure(statistics.median(quiet))} if len(quiet) == quiet_edits else {}
        return (
            {key: stuck for key in KEYS}
            | done
            | {"dropped": Measure(watched.dropped, over=True, note="stopped at a stuck save")}
        )
    finally:
        watched.close()
    return {
        "quiet_ms": Measure(statistics.median(quiet)),
        "plain_ms": Measure(statistics.median(latencies["plain"])),
        "plain_p95": Measure(p95(latencies["plain"])),
        "atomic_ms": Measure(statistics.median(latencies["atomic"])),
        "atomic_p95": Measure(p95(latencies["atomic"])),
        "dropped": Measure(watched.dropped),
    }


def p95(values: list[float]) -> float:
    """The 95th percentile, nearest rank."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def measure(contender: Contender, sizes: Mapping[str, Any]) -> dict[str, Measure]:
    """The saves of one contender, in a scratch copy of its app."""
    app = APPS[contender.key]
    with tempfile.TemporaryDirectory(prefix="bench-reload-") as scratch:
        directory = Path(scratch)
        for source, name in app.files.items():
            (directory / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ROOT / source, directory / name)
        with contender.server(cwd=directory) as server:
            return asyncio.run(_saves(server.port, directory / app.edited, app, sizes))


def _latency(key: str, title: str) -> Metric:
    return Metric(key, title, "ms", higher_is_better=False)


SCENARIO = Scenario(
    key="save_to_served",
    title="Save -> new code served, with a stream open",
    how=__doc__.split("\n\n", 1)[1].strip(),
    metrics=(
        _latency("quiet_ms", "plain save, no stream open, median"),
        _latency("plain_ms", "plain save, median"),
        _latency("plain_p95", "plain save, p95"),
        _latency("atomic_ms", "atomic save, median"),
        _latency("atomic_p95", "atomic save, p95"),
        Metric("dropped", "streams dropped over the saves", "streams", higher_is_better=False),
    ),
    contenders=CONTENDERS,
    measure=measure,
    sizes={
        "full": {"quiet_edits": 10, "edits": 20, "patience": PATIENCE},
        "smoke": {"quiet_edits": 1, "edits": 2, "patience": 2.0},
    },
    reps=1,
)
