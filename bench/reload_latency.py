"""Save -> reload-complete latency of replkit's Reloader, as an editor would see it.

Creates a throwaway package of a few modules (one importing another, as a handler module
imports its helpers), starts a Reloader on it with aiohttp loaded (so ``sys.modules`` is the
size of a real server's), then saves a module N times, each save a pause after the previous
reload finished, and prints the median and p90 of the time from the write to the end of the
reload (its report). Run: ``python -m bench.reload_latency [--n 30]``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import aiohttp.web  # noqa: F401  (a realistic sys.modules)

from bench.scenarios.save_to_served import save
from replkit.reload import ReloadResult
from replkit.watch import Reloader

HELPERS = "def render(value):\n    return f'<p>{value}</p>'\n"
HANDLER = "from .helpers import render\nVALUE = {value}\ndef handler():\n    return render(VALUE)\n"


def main() -> None:
    args = _parser().parse_args()
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory) / f"rk_bench_{os.getpid()}"
        root.mkdir()
        (root / "__init__.py").write_text("")
        (root / "helpers.py").write_text(HELPERS)
        handler = root / "handler.py"
        handler.write_text(HANDLER.format(value=0))
        sys.path.insert(0, directory)
        module = importlib.import_module(f"{root.name}.handler")
        latencies, reload_times = _measure(root, handler, module.__name__, args)
    _print("save -> reload complete", latencies)
    _print("reload itself", reload_times)
    print(
        f"(n={args.n}, step_ms={args.step_ms}, debounce_ms={args.debounce_ms}, "
        f"{'atomic rename' if args.atomic else 'in-place write'}, {os.cpu_count()} CPUs)"
    )


def _measure(
    root: Path, handler: Path, name: str, args: argparse.Namespace
) -> tuple[list[float], list[float]]:
    done = threading.Event()
    finished: list[tuple[float, ReloadResult]] = []

    def reported(result: ReloadResult) -> None:
        finished.append((time.perf_counter(), result))
        done.set()

    reloader = Reloader([root], report=reported, step_ms=args.step_ms, debounce_ms=args.debounce_ms)
    reloader.start()
    latencies, reload_times = [], []
    try:
        for value in range(1, args.n + 1):
            time.sleep(random.uniform(0.02, 0.08))  # a human between saves; phases vary
            done.clear()
            started = time.perf_counter()
            save(handler, HANDLER.format(value=value), atomic=args.atomic)
            if not done.wait(5):
                raise SystemExit(f"save {value} was not reloaded within 5 s")
            ended, result = finished[-1]
            if getattr(sys.modules[name], "VALUE", None) != value:
                raise SystemExit(f"save {value} reloaded, but not its content: {result}")
            latencies.append((ended - started) * 1000)
            reload_times.append(result.seconds * 1000)
    finally:
        reloader.stop()
    return latencies, reload_times


def _print(what: str, values: list[float]) -> None:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    print(
        f"{what:>24}: median {statistics.median(ordered):6.1f} ms   p90 {p90:6.1f} ms   "
        f"min {ordered[0]:6.1f} ms   max {ordered[-1]:6.1f} ms"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=30, help="number of saves (default 30)")
    parser.add_argument("--step-ms", type=int, default=10)
    parser.add_argument("--debounce-ms", type=int, default=200)
    parser.add_argument("--atomic", action="store_true", help="save by write + rename")
    return parser


if __name__ == "__main__":
    main()
