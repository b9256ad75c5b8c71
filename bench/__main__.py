"""`python -m bench`: run the benchmarks, print figures with their ratios, refresh docs/performance.md.

python -m bench                   # all of them, full size
python -m bench --only drain,live # some
python -m bench --quick           # scaled down (the figures are marked as quick)
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench import machine
from bench.results import BenchResult, save_result, write_doc
from punchgate.gateway.logs import configure_logging

BENCHMARKS = ("drain", "ingest", "fleet", "fleet_scale", "whole_read", "live", "recovery", "status", "push")


def _runner(name: str) -> Callable[..., BenchResult]:
    module = importlib.import_module(f"bench.bench_{name}")
    run: Callable[..., BenchResult] = module.run
    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description="punchgate benchmarks")
    parser.add_argument(
        "--only", default=",".join(BENCHMARKS), help=f"comma-separated: {', '.join(BENCHMARKS)}"
    )
    parser.add_argument(
        "--quick", action="store_true", help="scaled-down runs (minutes, not tens of minutes)"
    )
    parser.add_argument("--no-doc", action="store_true", help="print only; leave results and docs untouched")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    configure_logging("warning")  # the figures are the output; warnings still show
    print(f"machine: {machine.one_line(machine.describe())}")
    missed = 0
    for name in names:
        print(f"\n== {name} ==", flush=True)
        workdir = Path(tempfile.mkdtemp(prefix=f"punchgate-bench-{name}-"))
        load_before = machine.load_average()
        started = time.monotonic()
        try:
            result = _runner(name)(workdir, quick=args.quick)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        result.seconds = time.monotonic() - started
        result.load_before, result.load_after = load_before, machine.load_average()
        missed += sum(1 for f in result.figures if f.met is False)
        if not args.no_doc:
            save_result(result)
    if not args.no_doc:
        print(f"\nwrote {write_doc()}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
