"""Tables and charts of the runs: the table printed after each scenario, ``RESULTS.md``
with the machine, the issue's summary, a table and a chart per scenario, and where the time
goes (``bench/profiles/where-the-time-goes.md``, then ``summary.md``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bench.results import Median, Run
from bench.scenario import Metric, Scenario

HERE = Path(__file__).resolve().parent


def number(value: float) -> str:
    """A figure as a table shows it: three significant digits or so, ``k`` for thousands."""
    if value >= 10_000:
        return f"{value / 1000:.1f}k"
    if value == int(value):
        return f"{int(value):,}"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def figure(median: Median) -> str:
    """A median with its bound: ``12.3``, ``> 2,000``, ``failed``."""
    if median.value is None:
        return "failed"
    return f"{'> ' if median.over else ''}{number(median.value)}"


def ratio_text(run: Run, scenario: Scenario, metric: Metric, peer: str) -> str:
    """replkit ÷ ``peer`` as a table shows it: ``0.30x``, ``< 0.01x``, ``?``."""
    found = run.ratio(scenario, metric, peer)
    if found is None:
        return "?"
    value, bound = found
    return f"{bound + ' ' if bound else ''}{value:.2f}x"


def scenario_rows(run: Run, scenario: Scenario) -> list[list[str]]:
    """The scenario's table: a header, then a row per contender with its medians; a peer's
    cell also has the ratio replkit ÷ that peer."""
    header = ["", *(f"{m.title} ({m.unit})" for m in scenario.metrics)]
    rows = [header]
    for contender in scenario.contenders:
        if not run.measured(scenario.key, contender.key):
            continue
        row = [contender.title]
        for metric in scenario.metrics:
            cell = figure(run.median(scenario.key, contender.key, metric.key))
            if not contender.replkit:
                cell += f" ({ratio_text(run, scenario, metric, contender.key)})"
            row.append(cell)
        rows.append(row)
    return rows


def text_table(rows: Sequence[Sequence[str]]) -> str:
    """``rows`` as aligned columns of text, the first row a header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
             for row in rows]  # fmt: skip
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)


def markdown_table(rows: Sequence[Sequence[str]]) -> str:
    """``rows`` as a markdown table, the first row a header."""
    lines = ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    lines.insert(1, "|" + "---|" * len(rows[0]))
    return "\n".join(lines)


def summary_rows(runs: Sequence[Run], scenarios: Sequence[Scenario]) -> list[list[str]]:
    """The issue's table: a row per metric, replkit's median in each run, the peers' in the
    last run with the ratio replkit ÷ peer, the target and whether the last run meets it."""
    latest = runs[-1]
    header = ["measure", *(f"replkit ({run.label})" for run in runs), "peers, same run as "
              f"{latest.label} (replkit ÷ peer)", "target", f"met ({latest.label})"]  # fmt: skip
    rows = [header]
    for scenario in scenarios:
        if scenario.key not in latest.samples:
            continue
        for metric in scenario.metrics:
            mine = [figure(run.median(scenario.key, scenario.replkit.key, metric.key))
                    for run in runs]  # fmt: skip
            peers = "; ".join(
                f"{c.title} {figure(latest.median(scenario.key, c.key, metric.key))} "
                f"({ratio_text(latest, scenario, metric, c.key)})"
                for c in scenario.contenders
                if c is not scenario.replkit and latest.measured(scenario.key, c.key)
            )
            target = metric.target.text if metric.target else ""
            measure = f"{scenario.title}: {metric.title} ({metric.unit})"
            rows.append([measure, *mine, peers, target, met(latest, scenario, metric)])
    return rows


def met(run: Run, scenario: Scenario, metric: Metric) -> str:
    """``yes``/``no`` for a metric with a target, ``""`` without one, ``?`` if unknown."""
    target = metric.target
    if target is None:
        return ""
    mine = run.median(scenario.key, scenario.replkit.key, metric.key)
    if mine.value is None:
        return "?"
    value = mine.value
    if target.versus is not None:
        found = run.ratio(scenario, metric, target.versus)
        if found is None or found[1]:
            return "?"
        value = found[0]
    elif mine.over:
        return "no" if target.at_most is not None else "?"
    return "yes" if target.met(value) else "no"


def chart(run: Run, scenario: Scenario, others: Sequence[Run], path: Path) -> None:
    """A PNG of the scenario: a panel per metric, a bar per contender (its median, the
    repetitions as dots), replkit's bars from ``others`` runs beside this run's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = scenario.metrics
    bars = [(c.title, run, c.key, c.replkit) for c in scenario.contenders]
    for other in others:
        if scenario.key in other.samples:
            key = scenario.replkit.key
            bars.insert(0, (f"{scenario.replkit.title} ({other.label})", other, key, True))
    height = 0.45 * len(bars) + 1.0
    fig, axes = plt.subplots(len(metrics), 1, figsize=(9, height * len(metrics)), squeeze=False)
    for axis, metric in zip(axes[:, 0], metrics, strict=True):
        labels, values = [], []
        for position, (label, source, key, is_replkit) in enumerate(bars):
            found = source.median(scenario.key, key, metric.key)
            value = found.value or 0.0
            labels.append(label)
            values.append(value)
            color = "#d1495b" if is_replkit else "#8d99ae"
            if source is not run:
                color = "#edae49"
            axis.barh(position, value, color=color, hatch="//" if found.over else None)
            samples = source.samples.get(scenario.key, {}).get(key, {}).get(metric.key, [])
            dots = [m.value for m in samples if m.value is not None]
            axis.plot(dots, [position] * len(dots), "k.", markersize=4)
            axis.annotate(f" {figure(found)}", (value, position), va="center", fontsize=8)
        axis.set_yticks(range(len(labels)), labels, fontsize=8)
        axis.invert_yaxis()
        positive = [v for v in values if v > 0]
        if positive and max(positive) / min(positive) > 50:
            axis.set_xscale("log")
        better = "higher is better" if metric.higher_is_better else "lower is better"
        axis.set_title(f"{metric.title} ({metric.unit}, {better})", fontsize=9, loc="left")
        axis.margins(x=0.2)
    fig.suptitle(f"{scenario.title} ({run.label})", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def machine_lines(run: Run) -> list[str]:
    """The machine of ``run`` as markdown list items."""
    machine = run.machine
    peers = machine.get("peers", {})
    packages = ", ".join(f"{k} {v}" for k, v in machine.get("packages", {}).items() if v)
    peer_packages = ", ".join(f"{k} {v}" for k, v in peers.get("packages", {}).items() if v)
    return [
        f"- {machine.get('cores')} cores ({machine.get('cpu')}), "
        f"{machine.get('memory_gib')} GiB, Linux {machine.get('kernel')}",
        f"- replkit's environment: Python {machine.get('python')}; {packages}",
        f"- the peers' environment (`bench/.venv-peers`): Python {peers.get('python')}; "
        f"{peer_packages}",
        f"- load generator: wrk {machine.get('wrk')}; everything on 127.0.0.1",
    ]


def write(directory: Path, runs: Sequence[Run], scenarios: Sequence[Scenario]) -> Path:
    """Write ``directory/RESULTS.md`` from ``runs`` (the last is the one just made) and a chart
    per scenario of the last run under ``directory/charts``; return the file's path."""
    latest = runs[-1]
    others = [run for run in runs[:-1] if not run.smoke]
    lines = [
        "# replkit benchmark results",
        "",
        "Written by `python -m bench` (`make bench`); every figure is the median of "
        "interleaved repetitions, each against a fresh server process. `replkit ÷ peer` "
        "is the ratio of the medians. How to run it and what each app does: "
        "[README.md](README.md).",
        "",
        f"Runs: {', '.join(f'**{r.label}** ({r.started}, {r.seconds:.0f} s)' for r in runs)}.",
        "",
        f"## Machine ({latest.label})",
        "",
        *machine_lines(latest),
        "",
        "## Summary",
        "",
        markdown_table(summary_rows(runs, scenarios)),
        "",
    ]
    for scenario in scenarios:
        if scenario.key not in latest.samples:
            continue
        chart_path = directory / "charts" / f"{scenario.key}.png"
        chart(latest, scenario, others, chart_path)
        lines += [f"## {scenario.title}", "", scenario.how, ""]
        for run in runs:
            if scenario.key in run.samples:
                lines += [f"{run.label}:", "", markdown_table(scenario_rows(run, scenario)), ""]
        lines += [f"![{scenario.title}](charts/{chart_path.name})", ""]
    # Where the time goes: the reading of the profiles (by hand), then their top entries
    # (written by `python -m bench.profile`).
    for part in ("where-the-time-goes.md", "summary.md"):
        if (HERE / "profiles" / part).exists():
            lines += [(HERE / "profiles" / part).read_text().strip(), ""]
    path = directory / "RESULTS.md"
    path.write_text("\n".join(lines))
    return path
