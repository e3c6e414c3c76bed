"""Where replkit's time goes: ``python -m bench.profile [--smoke]`` (``make bench-profile``).

Profiles the replkit server of the benchmark (:mod:`bench.apps.replkit_app`, as ``replkit
serve`` runs it) under two workloads, ``GET /`` from wrk and bursts of events on one
stream, twice each: under cProfile (every call of the server's main thread, which runs the
event loop; the process writes its profile when SIGTERM ends it) and under py-spy, sampling
the running process from outside (no slowdown from instrumentation; ``--idle`` off, so
only time on the CPU counts). Writes ``bench/profiles/<workload>.cprofile.txt`` (pstats,
by own time and by cumulative time), ``<workload>.pyspy.txt`` (functions by own and total
share of the samples) and ``summary.md``, the top entries, which ``RESULTS.md`` includes.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import io
import pstats
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.client import close_all, open_streams
from bench.procs import PEERS_VENV, PROJECT_PYTHON, Server, free_port, raise_fd_limit
from bench.scenarios.requests import wrk

HERE = Path(__file__).resolve().parent
PY_SPY = PEERS_VENV / "bin" / "py-spy"
TOP = 25
SUMMARY_TOP = 12
SERVE = ["-m", "replkit", "serve", "bench.apps.replkit_app", "--host", "127.0.0.1", "--no-watch"]


def _get_root(port: int, seconds: float) -> None:
    wrk(port, max(1, round(seconds)))


def _bursts(port: int, seconds: float) -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while loop.time() < end:
            streams = await open_streams(port, "/burst?n=200000", 1, timeout=60)
            await streams.ended.reach(1, 120)
            close_all(streams.clients)

    asyncio.run(run())


WORKLOADS: dict[str, tuple[str, Callable[[int, float], None]]] = {
    "get_root": ("GET / through the default chain (wrk, 50 connections)", _get_root),
    "burst": ("one stream, bursts of 200,000 small events", _bursts),
}


def cprofile(name: str, seconds: float, out: Path) -> str:
    """Run ``name``'s workload against replkit under cProfile; the pstats report."""
    port = free_port()
    with tempfile.TemporaryDirectory() as scratch:
        stats = Path(scratch) / f"{name}.prof"
        argv = [PROJECT_PYTHON, "-m", "cProfile", "-o", stats, *SERVE, "--port", port]
        with Server(argv, port, name=f"replkit under cProfile ({name})") as server:
            WORKLOADS[name][1](port, seconds)
            server.terminate(30)
        text = io.StringIO()
        report = pstats.Stats(str(stats), stream=text).strip_dirs()
        text.write(f"# cProfile of replkit: {WORKLOADS[name][0]}\n\n## by own time\n")
        report.sort_stats("tottime").print_stats(TOP)
        text.write("\n## by cumulative time\n")
        report.sort_stats("cumulative").print_stats(TOP)
    (out / f"{name}.cprofile.txt").write_text(text.getvalue())
    return text.getvalue()


def pyspy(name: str, seconds: float, out: Path) -> list[tuple[str, float, float]] | str:
    """Sample replkit with py-spy during ``name``'s workload: ``(function, own %, total %)``
    rows, most own time first; or why py-spy could not run."""
    if not PY_SPY.exists():
        return "py-spy is not installed in the peers' environment"
    port = free_port()
    with (
        tempfile.TemporaryDirectory() as scratch,
        Server([PROJECT_PYTHON, *SERVE, "--port", port], port, name=f"replkit ({name})") as server,
    ):
        raw = Path(scratch) / "raw.txt"
        duration = str(round(seconds) + 1)
        command = [PY_SPY, "record", "--pid", server.pid, "--rate", 500, "--format", "raw",
                   "--output", raw, "--duration", duration, "--nonblocking"]  # fmt: skip
        sampler = threading.Thread(
            target=lambda: _run_quietly([str(part) for part in command]), name="py-spy"
        )
        sampler.start()
        WORKLOADS[name][1](port, seconds)
        sampler.join(seconds + 60)
        if not raw.exists():
            return "py-spy could not sample the server (no permission to read its memory?)"
        rows = _aggregate(raw.read_text())
    lines = [f"# py-spy of replkit: {WORKLOADS[name][0]}", "", "own %   total %  function"]
    lines += [f"{own:6.1f}  {total:7.1f}  {function}" for function, own, total in rows[:TOP]]
    (out / f"{name}.pyspy.txt").write_text("\n".join(lines) + "\n")
    return rows


def _run_quietly(command: Sequence[str]) -> None:
    subprocess.run(command, capture_output=True, timeout=600, check=False)


_LINE = re.compile(r" \(([^)]*?):\d+\)$")


def _aggregate(raw: str) -> list[tuple[str, float, float]]:
    """Collapsed stacks (``frame;frame;... count``) -> functions with their own and total
    share of the samples, line numbers dropped."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_LINE.sub(lambda m: f" ({Path(m[1]).name})", f) for f in stack.split(";")]
        samples += int(count)
        own[frames[-1]] += int(count)
        for frame in set(frames):
            total[frame] += int(count)
    rows = [(f, 100 * own[f] / samples, 100 * total[f] / samples) for f in total]
    return sorted(rows, key=lambda row: -row[1])


def _cprofile_top(text: str) -> list[str]:
    """The first rows of the own-time table of a pstats report."""
    table = text.split("## by own time", 1)[1].split("## by cumulative", 1)[0]
    rows = [line for line in table.splitlines() if re.match(r"\s+\d", line)]
    return rows[:SUMMARY_TOP]


def summary(results: dict[str, tuple[str, list[tuple[str, float, float]] | str]]) -> str:
    """The markdown ``RESULTS.md`` includes: the top entries of each profile."""
    lines = ["### The profiles' top entries", ""]
    for name, (cprofile_text, spied) in results.items():
        lines += [f"#### {WORKLOADS[name][0]}", ""]
        if isinstance(spied, str):
            lines += [f"py-spy: {spied}.", ""]
        else:
            lines += ["py-spy, functions by share of CPU samples (own, then total):", ""]
            lines += ["| own % | total % | function |", "|---:|---:|---|"]
            lines += [f"| {o:.1f} | {t:.1f} | `{f}` |" for f, o, t in spied[:SUMMARY_TOP]]
            lines.append("")
        lines += ["cProfile, by own time (ncalls, tottime, percall, cumtime, percall, function):"]
        lines += ["", "```", *_cprofile_top(cprofile_text), "```", ""]
        lines += [f"Full reports: `bench/profiles/{name}.cprofile.txt`, `{name}.pyspy.txt`.", ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Profile both workloads; write the reports and ``summary.md``."""
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="a second per workload")
    parser.add_argument("--out", type=Path, default=HERE / "profiles", help="where to write")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed: run `make bench-env`")
        return 1
    raise_fd_limit()
    seconds = 1.0 if args.smoke else 8.0
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in WORKLOADS:
        print(f"profiling {name} ...", flush=True)
        results[name] = (cprofile(name, seconds, args.out), pyspy(name, seconds, args.out))
    (args.out / "summary.md").write_text(summary(results))
    print(f"wrote {args.out}/summary.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
