"""Benchmark results: figures next to their same-run comparisons, kept and rendered to Markdown.

A figure measured over several runs (`Figure.of_runs`) is the median of its runs, shown with
their spread (lowest–highest) and count; its ratio is the median of the runs' own ratios,
each run's figure divided by its comparison measured next to it. Every figure carries the
machine's load average (1 min) from before its first run to after its last (`LoadWindow`).

Each run of a benchmark replaces its own entry in `bench/results.json`; docs/performance.md
is rendered from all entries plus the hand-written analysis in `bench/notes.md`, so running
one benchmark refreshes its section without losing the others.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import machine

ROOT = Path(__file__).resolve().parent.parent
RESULTS_FILE = Path(__file__).resolve().parent / "results.json"
NOTES_FILE = Path(__file__).resolve().parent / "notes.md"
DOC_FILE = ROOT / "docs" / "performance.md"
ORDER = ("drain", "ingest", "fleet", "live", "recovery", "status", "chaos")


@dataclass
class Figure:
    """One measured figure, optionally with its comparison and the goal it is judged by."""

    label: str
    value: float
    unit: str
    goal: str = ""  # e.g. "≥ 0.5× the probe"
    met: bool | None = None  # None: no goal
    versus: str = ""  # what it is compared with, e.g. "limit probe"
    versus_value: float | None = None
    ratio: float | None = None  # value / versus_value, or the ratio the goal is stated in
    runs: list[float] = field(default_factory=list)  # each run's value (value is their median)
    versus_runs: list[float] = field(default_factory=list)
    ratio_runs: list[float] = field(default_factory=list)  # each run's own ratio
    load_before: float | None = None  # load average (1 min) before the first run
    load_after: float | None = None  # and after the last

    @classmethod
    def of_runs(
        cls,
        label: str,
        runs: Sequence[float],
        unit: str,
        *,
        versus: str = "",
        versus_runs: Sequence[float] = (),
        goal: str = "",
        check: Callable[[float, float | None], bool] | None = None,
        load: LoadWindow | None = None,
    ) -> Figure:
        """The median of `runs` with its spread; against `versus_runs` (run n against run n,
        measured side by side) the ratio is the median of the runs' ratios. `check(value,
        ratio)` says whether the goal is met."""
        value = statistics.median(runs)
        versus_value = statistics.median(versus_runs) if versus_runs else None
        ratios = [r / v for r, v in zip(runs, versus_runs, strict=False) if v]
        ratio = statistics.median(ratios) if ratios else None
        return cls(
            label,
            value,
            unit,
            goal=goal,
            met=None if check is None else check(value, ratio),
            versus=versus,
            versus_value=versus_value,
            ratio=ratio,
            runs=list(runs),
            versus_runs=list(versus_runs),
            ratio_runs=ratios,
            load_before=None if load is None else load.before,
            load_after=None if load is None else load.after,
        )

    def text(self) -> str:
        out = f"{self.label}: {_num(self.value)} {self.unit}{_spread(self.runs)}"
        if self.versus_value is not None:
            out += f" vs {self.versus} {_num(self.versus_value)} {self.unit}{_spread(self.versus_runs)}"
        if self.ratio is not None:
            out += f" → {self.ratio:.2f}×{_ratio_spread(self.ratio_runs)}"
        if self.goal:
            out += f"  (goal {self.goal}: {'met' if self.met else 'MISSED'})"
        if self.load_before is not None:
            out += f"  [load {self.load_before:.2f} → {self.load_after:.2f}]"
        return out


class LoadWindow:
    """The machine's load average (1 min) before and after a block: `with LoadWindow() as load:`."""

    def __init__(self) -> None:
        self.before = machine.load_average()
        self.after = self.before

    def __enter__(self) -> LoadWindow:
        self.before = machine.load_average()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.after = machine.load_average()


def _spread(runs: Sequence[float]) -> str:
    """` (low–high, n runs)` for a figure of several runs; nothing for one."""
    if len(runs) < 2:
        return ""
    return f" ({_num(min(runs))}–{_num(max(runs))}, {len(runs)} runs)"


def _ratio_spread(ratios: Sequence[float]) -> str:
    if len(ratios) < 2:
        return ""
    return f" ({min(ratios):.2f}–{max(ratios):.2f})"


@dataclass
class BenchResult:
    name: str
    title: str
    command: str
    figures: list[Figure] = field(default_factory=list)
    details: list[str] = field(default_factory=list)  # setup, sizes, anything a reader needs
    quick: bool = False
    seconds: float = 0.0
    load_before: float = 0.0
    load_after: float = 0.0
    machine: dict[str, str] = field(default_factory=machine.describe)

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        print(f"  {figure.text()}", flush=True)
        return figure

    def note(self, text: str) -> None:
        self.details.append(text)
        print(f"  · {text}", flush=True)


def _num(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def load_results() -> dict[str, dict[str, Any]]:
    if not RESULTS_FILE.exists():
        return {}
    data = json.loads(RESULTS_FILE.read_text())
    return data if isinstance(data, dict) else {}


def save_result(result: BenchResult) -> None:
    data = load_results()
    data[result.name] = asdict(result)
    RESULTS_FILE.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def _section(entry: dict[str, Any]) -> list[str]:
    m = entry["machine"]
    lines = [f"### {entry['title']}", ""]
    scale = " (**quick, scaled-down run**)" if entry.get("quick") else ""
    lines.append(
        f"Measured {m['date']}{scale} on {m['cpu']}, {m['cores']} cores, {m['ram']} RAM, "
        f"Python {m['python']}, {m['os']}, mosquitto {m['mosquitto']}; "
        + (
            f"load average {entry['load_before']:.2f} before, {entry['load_after']:.2f} after; "
            if entry["load_before"] >= 0
            else "load average not recorded; "
        )
        + f"took {entry['seconds']:.0f} s. Command: `{entry['command']}`."
    )
    figures = entry["figures"]
    with_load = any(f.get("load_before") is not None for f in figures)
    head = "| figure | value | compared with | ratio | goal | |" + (" load |" if with_load else "")
    lines += ["", head, "|---|---|---|---|---|---|" + ("---|" if with_load else "")]
    for f in figures:
        versus = (
            f"{f['versus']}: {_num(f['versus_value'])} {f['unit']}{_spread(f.get('versus_runs', []))}"
            if f["versus_value"] is not None
            else ""
        )
        ratio = f"{f['ratio']:.2f}×{_ratio_spread(f.get('ratio_runs', []))}" if f["ratio"] is not None else ""
        verdict = "" if f["met"] is None else ("met" if f["met"] else "**missed**")
        value = f"{_num(f['value'])} {f['unit']}{_spread(f.get('runs', []))}"
        row = f"| {f['label']} | {value} | {versus} | {ratio} | {f['goal']} | {verdict} |"
        if with_load:
            before = f.get("load_before")
            row += f" {before:.2f} → {f['load_after']:.2f} |" if before is not None else " |"
        lines.append(row)
    if entry["details"]:
        lines.append("")
        lines += [f"- {d}" for d in entry["details"]]
    lines.append("")
    return lines


def render_section(result: BenchResult) -> str:
    """One result's section of docs/performance.md, as `write_doc` would render it."""
    return "\n".join(_section(asdict(result)))


def render_doc() -> str:
    data = load_results()
    lines = [
        "# Performance",
        "",
        "Two questions decide whether punchgate fits a site: **does it keep up**, and **does it ever",
        "lose a punch**. Every figure below comes from `python -m bench` (or `./dev bench`) on the",
        "machine named with it, and is printed next to a comparison measured *in the same run*, as a",
        "ratio: absolute times vary between machines, ratios much less. A figure is the median of",
        "its runs (at least three), with the lowest and highest run and their count; its ratio is",
        "the median of the runs' own ratios, each run against its comparison measured beside it.",
        "The load column is the machine's load average (1 min) before the first run and after the",
        "last.",
        "",
        "```",
        "./dev bench                      # every benchmark, full size (the better part of an hour)",
        "./dev bench --only drain,live    # some of them",
        "./dev bench --quick              # scaled down, about 15 minutes (figures marked quick)",
        "./dev chaos --minutes 30         # the chaos harness (python -m bench.chaos)",
        "```",
        "",
        "This file is rewritten by those commands: the tables from `bench/results.json`, the",
        "analysis from `bench/notes.md`.",
        "",
        "## Results",
        "",
    ]
    for name in ORDER:
        if name in data:
            lines += _section(data[name])
    for name, entry in data.items():
        if name not in ORDER:
            lines += _section(entry)
    if NOTES_FILE.exists():
        lines += [NOTES_FILE.read_text().rstrip(), ""]
    return "\n".join(lines)


def write_doc() -> Path:
    DOC_FILE.write_text(render_doc())
    return DOC_FILE
