"""A run's figures: every measure of every scenario, saved as JSON (``runs/<label>.json``),
and what the tables show of them: medians and ratios replkit ÷ peer."""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.scenario import Measure, Metric, Scenario

Samples = dict[str, dict[str, list[Measure]]]
"""Per contender key, per metric key, the measures of each repetition."""


@dataclass(frozen=True)
class Median:
    """The median of a contender's repetitions. ``over``: some were lower bounds, so the
    median is one too; ``value`` is ``None`` when every repetition failed."""

    value: float | None
    over: bool = False


@dataclass
class Run:
    """One run of the benchmark: its label (``before``, ``after``, ...), when and where it
    was measured, and the samples of each scenario it ran."""

    label: str
    smoke: bool
    started: str
    seconds: float
    machine: Mapping[str, Any]
    samples: dict[str, Samples]

    def save(self, path: Path) -> None:
        """Write the run as JSON to ``path``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "label": self.label,
            "smoke": self.smoke,
            "started": self.started,
            "seconds": round(self.seconds, 1),
            "machine": self.machine,
            "samples": {
                scenario: {
                    contender: {
                        metric: [m.to_json() for m in measures]
                        for metric, measures in by_metric.items()
                    }
                    for contender, by_metric in by_contender.items()
                }
                for scenario, by_contender in self.samples.items()
            },
        }
        path.write_text(json.dumps(data, indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> Run:
        """A run saved by :meth:`save`."""
        data = json.loads(path.read_text())
        samples = {
            scenario: {
                contender: {
                    metric: [Measure.from_json(m) for m in measures]
                    for metric, measures in by_metric.items()
                }
                for contender, by_metric in by_contender.items()
            }
            for scenario, by_contender in data["samples"].items()
        }
        return cls(
            data["label"], data["smoke"], data["started"], data["seconds"], data["machine"], samples
        )

    def measured(self, scenario: str, contender: str) -> bool:
        """Whether this run measured ``contender`` in ``scenario`` at all (a contender added
        after the run, or left out with ``--contenders``, was not; one that failed was)."""
        return any(self.samples.get(scenario, {}).get(contender, {}).values())

    def median(self, scenario: str, contender: str, metric: str) -> Median:
        """The median of a contender's measures of a metric (``Median(None)``: none)."""
        measures = self.samples.get(scenario, {}).get(contender, {}).get(metric, [])
        return median(measures)

    def ratio(self, scenario: Scenario, metric: Metric, peer: str) -> tuple[float, str] | None:
        """replkit's median ÷ ``peer``'s, and ``"<"``, ``">"`` or ``""`` for a ratio that is
        a bound (a lower bound on either side); ``None`` when one is missing or both are
        bounds."""
        mine = self.median(scenario.key, scenario.replkit.key, metric.key)
        theirs = self.median(scenario.key, peer, metric.key)
        if mine.value is None or theirs.value is None or not theirs.value:
            return None
        if mine.over and theirs.over:
            return None
        bound = ">" if mine.over else "<" if theirs.over else ""
        return mine.value / theirs.value, bound


def median(measures: list[Measure]) -> Median:
    """The median of the measures that succeeded; a lower bound if any of them is one."""
    values = [m.value for m in measures if m.value is not None]
    if not values:
        return Median(None)
    return Median(statistics.median(values), any(m.over for m in measures))


def load_runs(directory: Path) -> list[Run]:
    """The runs saved under ``directory/runs``: ``before`` first, ``after`` next, then the
    others oldest first."""
    runs = [Run.load(path) for path in sorted((directory / "runs").glob("*.json"))]
    order = {"before": 0, "after": 1}
    return sorted(runs, key=lambda run: (order.get(run.label, 2), run.started))
