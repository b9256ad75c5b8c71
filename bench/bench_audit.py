"""audit: what the audit chain costs the buffer's commit throughput (issue 16: goal >= 0.9x).

    python -m bench.bench_audit [--rounds 3]

The same punches are committed to two fresh buffers side by side (WAL, synchronous=FULL, so
every commit is fsynced), one with the chain on and one with it off (`Store.audit_enabled`,
which exists for this benchmark only), in two shapes: a terminal's full read (commits of 1,000
punches, the ingest path) and live punches (one punch per commit). The two buffers take turns
commit by commit (which one goes first alternates), so the machine's other load falls on both
alike; each commit's wall time and CPU time (of this thread: the commit's own work, fsync
calls included) is summed per buffer. A round's ratio is chain-on throughput over chain-off;
the median of the rounds is reported with their spread, and the load before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from punchgate.sync.settings import BufferSettings
from punchgate.sync.store import Store
from tests.support.factories import make_punches

SHAPES = {"full_read": (1000, 60), "live": (1, 1500)}  # punches per commit, commits


def _open(path: Path, *, audit: bool) -> Store:
    store = Store.open(
        BufferSettings.model_validate({"path": str(path), "min_free_disk_mb": 0, "max_pending": 10_000_000}),
        gateway_id="bench",
    )
    store.audit_enabled = audit
    return store


def _round(folder: Path, *, per_commit: int, commits: int) -> dict[str, float]:
    """One round: both buffers fed the same commits in turns; per-buffer rates and the ratios."""
    tag = time.monotonic_ns()
    stores = {
        mode: _open(folder / f"{mode}-{per_commit}-{tag}.db", audit=mode == "on") for mode in ("on", "off")
    }
    wall = {"on": 0.0, "off": 0.0}
    cpu = {"on": 0.0, "off": 0.0}
    try:
        for n in range(commits):
            batch = make_punches("door-1", per_commit, start=n * per_commit)
            for mode in ("on", "off") if n % 2 == 0 else ("off", "on"):
                started, cpu_started = time.perf_counter(), time.thread_time()
                stores[mode].add_punches(batch)
                wall[mode] += time.perf_counter() - started
                cpu[mode] += time.thread_time() - cpu_started
    finally:
        for store in stores.values():
            store.close()
    punches = per_commit * commits
    return {
        "off_per_second": punches / wall["off"],
        "on_per_second": punches / wall["on"],
        "ratio": wall["off"] / wall["on"],
        "cpu_ratio": cpu["off"] / cpu["on"],
        "on_cpu_us_per_commit": cpu["on"] / commits * 1e6,
        "off_cpu_us_per_commit": cpu["off"] / commits * 1e6,
    }


def _median(values: list[float], digits: int) -> dict[str, float]:
    return {"median": round(statistics.median(values), digits), "min": round(min(values), digits),
            "max": round(max(values), digits)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as work:
        for shape, (per_commit, commits) in SHAPES.items():
            load_before = os.getloadavg()[0]
            rounds = [_round(Path(work), per_commit=per_commit, commits=commits) for _ in range(args.rounds)]
            result = {key: _median([r[key] for r in rounds], 3 if "ratio" in key else 0) for key in rounds[0]}
            result["load"] = {"before": round(load_before, 1), "after": round(os.getloadavg()[0], 1)}
            print(json.dumps({shape: result}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
