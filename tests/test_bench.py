"""The benchmark's smoke run: every scenario, every contender, tiny sizes, real processes.

No timing is asserted: only that each scenario produced a number for each contender and
metric, and that ``RESULTS.md`` and a chart per scenario are written (into a temporary
directory, never over the committed ``bench/RESULTS.md``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from bench.procs import PEERS_PYTHON
from bench.scenarios import SCENARIOS


@pytest.mark.timeout(240)
def test_smoke_run_measures_every_contender_and_writes_the_report(tmp_path: Path) -> None:
    # Missing, they fail the test rather than skip it: `make test` installs both.
    assert Path(PEERS_PYTHON).exists(), "no bench/.venv-peers: run `make test` or `make bench-env`"
    assert shutil.which("wrk"), "wrk is not installed: run `make test` or `make bench-env`"
    committed = ROOT / "bench" / "RESULTS.md"
    before = committed.read_bytes() if committed.exists() else None
    run = subprocess.Popen(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        out, _ = run.communicate(timeout=220)
    except subprocess.TimeoutExpired:
        run.terminate()  # the runner stops the servers it started on its way out
        out, _ = run.communicate(timeout=30)
    assert run.returncode == 0, out[-5000:]

    samples = json.loads((tmp_path / "runs" / "smoke.json").read_text())["samples"]
    missing = [
        f"{scenario.key}/{contender.key}/{metric.key}: {measures}"
        for scenario in SCENARIOS
        for contender in scenario.contenders
        for metric in scenario.metrics
        if not (measures := samples[scenario.key][contender.key][metric.key])
        or any(measure["value"] is None for measure in measures)
    ]
    assert not missing, "\n".join(missing)

    results = (tmp_path / "RESULTS.md").read_text()
    for scenario in SCENARIOS:
        assert f"## {scenario.title}" in results
        chart = tmp_path / "charts" / f"{scenario.key}.png"
        assert chart.read_bytes().startswith(b"\x89PNG"), chart
    assert (committed.read_bytes() if committed.exists() else None) == before


def test_profile_shares_of_collapsed_stacks() -> None:
    from bench.profile import _aggregate

    raw = (
        "main (a.py:1);handle (/x/b.py:10);encode (/x/c.py:5) 3\n"
        "main (a.py:1);handle (/x/b.py:12) 1\n"
    )
    rows = {function: (own, total) for function, own, total in _aggregate(raw)}
    assert rows["encode (c.py)"] == (75.0, 75.0)
    assert rows["handle (b.py)"] == (25.0, 100.0)
    assert rows["main (a.py)"] == (0.0, 100.0)


def test_report_leaves_out_what_a_run_did_not_measure_and_shows_what_failed() -> None:
    from bench.report import scenario_rows
    from bench.results import Run
    from bench.scenario import Measure
    from bench.scenarios.requests import SCENARIO

    samples = {
        "replkit": {"rps": [Measure(100.0)]},
        "aiohttp": {"rps": [Measure(None, note="crashed")]},
        "starlette": {"rps": []},  # left out with --contenders
    }  # the other contenders came after this run
    run = Run("old", False, "", 0.0, {}, {"requests": samples})
    rows = {row[0]: row[1] for row in scenario_rows(run, SCENARIO)[1:]}
    assert rows == {"replkit": "100", "bare aiohttp": "failed (?)"}
