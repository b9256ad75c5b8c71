"""Benchmark results: figures next to their same-run comparisons, kept and rendered to Markdown.

Each run of a benchmark replaces its own entry in `bench/results.json`; docs/performance.md
is rendered from all entries plus the hand-written analysis in `bench/notes.md`, so running
one benchmark refreshes its section without losing the others.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import machine

ROOT = Path(__file__).resolve().parent.parent
RESULTS_FILE = Path(__file__).resolve().parent / "results.json"
NOTES_FILE = Path(__file__).resolve().parent / "notes.md"
DOC_FILE = ROOT / "docs" / "performance.md"
ORDER = ("drain", "ingest", "fleet", "live", "recovery", "chaos")


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

    def text(self) -> str:
        out = f"{self.label}: {_num(self.value)} {self.unit}"
        if self.versus_value is not None:
            out += f" vs {self.versus} {_num(self.versus_value)} {self.unit}"
        if self.ratio is not None:
            out += f" → {self.ratio:.2f}×"
        if self.goal:
            out += f"  (goal {self.goal}: {'met' if self.met else 'MISSED'})"
        return out


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
    lines += ["", "| figure | value | compared with | ratio | goal | |", "|---|---|---|---|---|---|"]
    for f in entry["figures"]:
        versus = (
            f"{f['versus']}: {_num(f['versus_value'])} {f['unit']}" if f["versus_value"] is not None else ""
        )
        ratio = f"{f['ratio']:.2f}×" if f["ratio"] is not None else ""
        verdict = "" if f["met"] is None else ("met" if f["met"] else "**missed**")
        lines.append(
            f"| {f['label']} | {_num(f['value'])} {f['unit']} | {versus} | {ratio} | {f['goal']} | {verdict} |"
        )
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
        "ratio: absolute times vary between machines, ratios much less.",
        "",
        "```",
        "./dev bench                      # every benchmark, full size (about 20 minutes)",
        "./dev bench --only drain,live    # some of them",
        "./dev bench --quick              # scaled down, a few minutes (figures marked quick)",
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
