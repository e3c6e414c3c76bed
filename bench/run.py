"""The runner: ``python -m bench [--smoke] [--label L] [--out DIR] [--only KEY ...]``.

Runs each scenario's repetitions interleaved (every contender once, then every contender
again, ...), prints a table after each scenario, saves the run as ``DIR/runs/L.json`` and
writes ``DIR/RESULTS.md`` and ``DIR/charts/*.png`` from every run saved there (a full run
labelled ``before`` and one labelled ``after`` show side by side).

``--smoke`` runs every scenario and every contender once at tiny sizes, real processes
still; it writes files only with ``--out``. ``--render`` measures nothing: it writes
``RESULTS.md`` and the charts again from the runs saved (after new profiles, say).
"""

from __future__ import annotations

import argparse
import datetime
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench import machine, report
from bench.procs import PEERS_PYTHON, raise_fd_limit
from bench.results import Run, Samples, load_runs, median
from bench.scenario import Measure, Scenario
from bench.scenarios import SCENARIOS

HERE = Path(__file__).resolve().parent


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns the exit status."""
    args = _parser().parse_args(argv)
    args.label = args.label or ("smoke" if args.smoke else "latest")
    if args.render:
        out = args.out or HERE
        print(f"wrote {report.write(out, load_runs(out), SCENARIOS)}")
        return 0
    if not Path(PEERS_PYTHON).exists():
        print(f"no peers' environment at {PEERS_PYTHON}: run `make bench-env`", file=sys.stderr)
        return 1
    # SIGTERM unwinds like Ctrl-C: every server started so far is stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    limit = raise_fd_limit()
    mode = "smoke" if args.smoke else "full"
    chosen = [s for s in SCENARIOS if not args.only or s.key in args.only]
    print(f"replkit benchmark, {mode} run '{args.label}', open-file limit {limit}", flush=True)
    began = time.monotonic()
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    samples: dict[str, Samples] = {}
    for scenario in chosen:
        samples[scenario.key] = run_scenario(scenario, mode, args.reps, args.contenders)
        partial = Run(args.label, args.smoke, started, 0.0, {}, samples)
        print(report.text_table(report.scenario_rows(partial, scenario)), "\n", flush=True)
    run = Run(
        args.label, args.smoke, started, time.monotonic() - began, machine.describe(), samples
    )
    out = args.out or (None if args.smoke else HERE)
    if out is not None:
        run.save(out / "runs" / f"{args.label}.json")
        path = report.write(out, load_runs(out), chosen)
        print(f"wrote {path} and its charts", flush=True)
    print(report.text_table(report.summary_rows([run], chosen)))
    print(f"\n{mode} run took {run.seconds:.0f} s", flush=True)
    return 0


def run_scenario(
    scenario: Scenario, mode: str, reps: int | None, only: Sequence[str] | None = None
) -> Samples:
    """Every contender once per repetition, interleaved; a failed measurement is noted and
    the run goes on without that contender (it would most likely fail again, slowly)."""
    repetitions = 1 if mode == "smoke" else reps or scenario.reps
    sizes = scenario.sizes[mode]
    samples: Samples = {c.key: {m.key: [] for m in scenario.metrics} for c in scenario.contenders}
    print(f"== {scenario.title} ({repetitions} repetitions)", flush=True)
    failed: set[str] = set()
    for rep in range(repetitions):
        for contender in scenario.contenders:
            if contender.key in failed or (only and contender.key not in only):
                continue
            began = time.monotonic()
            try:
                measured = scenario.measure(contender, sizes)
            except Exception as err:  # one contender failing must not lose the whole run
                failure = Measure(None, note=f"{type(err).__name__}: {err}"[:300] or "failed")
                measured = {m.key: failure for m in scenario.metrics}
                failed.add(contender.key)
            for metric in scenario.metrics:
                samples[contender.key][metric.key].append(measured[metric.key])
            shown = ", ".join(
                f"{m.key} {report.figure(median([measured[m.key]]))}" for m in scenario.metrics
            )
            notes = {measure.note for measure in measured.values() if measure.note}
            took = time.monotonic() - began
            print(
                f"  {rep + 1}/{repetitions} {contender.title}: {shown} ({took:.1f} s)"
                + "".join(f"\n    {note}" for note in notes),
                flush=True,
            )
    return samples


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one repetition")
    parser.add_argument("--render", action="store_true", help="only write RESULTS.md again")
    parser.add_argument("--label", default=None, help="the run's name (default: latest, or smoke)")
    parser.add_argument("--out", type=Path, help="where to write runs/, RESULTS.md, charts/")
    parser.add_argument("--reps", type=int, help="repetitions of every scenario")
    parser.add_argument("--contenders", nargs="+", metavar="KEY", help="run only these")
    parser.add_argument(
        "--only", nargs="+", choices=[s.key for s in SCENARIOS], help="run these scenarios"
    )
    return parser
