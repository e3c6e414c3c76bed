"""What a scenario is: the contenders it runs, the metrics it measures, how big it is in a
full run and in a smoke run, and the targets the issue sets for replkit."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.procs import ROOT, Server, free_port


@dataclass(frozen=True)
class Contender:
    """A server under test: ``command(port)`` starts it on ``port`` of 127.0.0.1.
    ``scale``: the share of a volume scenario's events it gets, for a contender so slow that
    the full volume would not fit the run's time (a rate does not depend on the volume)."""

    key: str
    title: str
    command: Callable[[int], Sequence[str]]
    replkit: bool = False
    scale: float = 1.0

    def server(self, env: Mapping[str, str] | None = None, cwd: Path = ROOT) -> Server:
        """An unstarted :class:`~bench.procs.Server` of this contender on a free port, run
        in ``cwd``; ``env`` is added to its environment (``BENCH_HEARTBEAT``)."""
        port = free_port()
        return Server(self.command(port), port, name=self.title, cwd=cwd, env=dict(env or {}))


@dataclass(frozen=True)
class Target:
    """The issue's target for replkit's median of a metric: ``at_least`` or ``at_most``,
    of the value itself or, with ``versus``, of its ratio to that contender's median."""

    text: str
    at_least: float | None = None
    at_most: float | None = None
    versus: str | None = None

    def met(self, value: float) -> bool:
        """Whether ``value`` (the ratio, with ``versus``) meets the target."""
        low = self.at_least is None or value >= self.at_least
        return low and (self.at_most is None or value <= self.at_most)


@dataclass(frozen=True)
class Metric:
    """One figure a scenario measures per contender and repetition."""

    key: str
    title: str
    unit: str
    higher_is_better: bool
    target: Target | None = None


@dataclass(frozen=True)
class Measure:
    """One measured value. ``over``: the thing had not happened when the measurement gave up
    at ``value`` (a lower bound, such as "> 2000 ms"). ``value`` is ``None`` when the
    measurement failed, and ``note`` says why."""

    value: float | None
    over: bool = False
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        """This measure as JSON."""
        return {"value": self.value, "over": self.over, "note": self.note}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Measure:
        """A measure from :meth:`to_json`."""
        return cls(data["value"], bool(data.get("over")), str(data.get("note", "")))


Measurement = Callable[[Contender, Mapping[str, Any]], dict[str, Measure]]
"""``measure(contender, sizes)``: one repetition, one contender; a measure per metric key."""


@dataclass(frozen=True)
class Scenario:
    """A scenario: ``measure`` run ``reps`` times for each contender, interleaved.

    ``sizes`` has a ``"full"`` and a ``"smoke"`` mapping of the scenario's parameters;
    ``how`` says how it is measured (markdown, one paragraph).
    """

    key: str
    title: str
    how: str
    metrics: tuple[Metric, ...]
    contenders: tuple[Contender, ...]
    measure: Measurement
    sizes: Mapping[str, Mapping[str, Any]]
    reps: int = 3

    @property
    def replkit(self) -> Contender:
        """The replkit contender whose figures the ratios and targets use (the first)."""
        return next(c for c in self.contenders if c.replkit)
