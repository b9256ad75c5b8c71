"""audit: what the audit chain costs the buffer's commit throughput (issue 16: goal >= 0.9x).

    python -m bench.bench_audit [--rounds 3]

The same punches are committed to fresh buffers (WAL, synchronous=FULL, so every commit is
fsynced) with the chain on and off (`Store.audit_enabled`, which exists for this benchmark
only), in two shapes: a terminal's full read (commits of 1,000 punches, the ingest path) and
live punches (one punch per commit). Rounds alternate on and off; the best round of each
counts, since the machine's other load only ever slows a round down. `cpu_ratio` compares
punches per CPU second of this process, which other load hardly moves.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from punchgate.sync.settings import BufferSettings
from punchgate.sync.store import Store
from tests.support.factories import make_punches

SHAPES = {"full_read": (1000, 100), "live": (1, 1000)}  # punches per commit, commits


def _round(folder: Path, *, audit: bool, per_commit: int, commits: int) -> tuple[float, float]:
    """(punches per wall second, punches per CPU second of this process)."""
    path = folder / f"{'on' if audit else 'off'}-{per_commit}-{time.monotonic_ns()}.db"
    store = Store.open(
        BufferSettings.model_validate({"path": str(path), "min_free_disk_mb": 0, "max_pending": 10_000_000}),
        gateway_id="bench",
    )
    store.audit_enabled = audit
    batches = [make_punches("door-1", per_commit, start=n * per_commit) for n in range(commits)]
    try:
        started, cpu = time.perf_counter(), time.process_time()
        for batch in batches:
            store.add_punches(batch)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    finally:
        store.close()
    return per_commit * commits / elapsed, per_commit * commits / cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as work:
        for shape, (per_commit, commits) in SHAPES.items():
            best = {"off": 0.0, "on": 0.0}
            best_cpu = {"off": 0.0, "on": 0.0}
            for _ in range(args.rounds):
                for mode in ("off", "on"):
                    rate, cpu_rate = _round(
                        Path(work), audit=mode == "on", per_commit=per_commit, commits=commits
                    )
                    best[mode] = max(best[mode], rate)
                    best_cpu[mode] = max(best_cpu[mode], cpu_rate)
            results[shape] = {
                "punches_per_second_without_chain": round(best["off"]),
                "punches_per_second_with_chain": round(best["on"]),
                "ratio": round(best["on"] / best["off"], 3),
                "cpu_ratio": round(best_cpu["on"] / best_cpu["off"], 3),  # insensitive to other load
            }
            print(json.dumps({shape: results[shape]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
