"""export: rows/s and peak RSS of `punchgate export` (CSV and XLSX) over a large buffer.

    python -m bench.bench_export                         # 100,000 and 1,000,000 punches
    python -m bench.bench_export --punches 200000 --formats csv

For each size a buffer is filled through the store (audit chain included) with punches of 20
terminals spread over 30 days, then `punchgate export` runs as its own process for the whole
range, once per format; its wall time and peak resident memory (ru_maxrss of that process)
are reported, with the load average before and after each export (the development machine is
shared). Sizes side by side in one run show whether memory stays flat. Goal (issue 16): RSS
flat and <= 150 MB whatever the size.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from punchgate.sync.records import Punch
from punchgate.sync.settings import BufferSettings
from punchgate.sync.store import Store

REPO = Path(__file__).resolve().parents[1]
START = dt.datetime(2026, 3, 1, 6, 0)
DEVICES = 20


def _punches(first: int, count: int) -> list[Punch]:
    out = []
    for n in range(first, first + count):
        device = f"door-{n % DEVICES}"
        local = START + dt.timedelta(seconds=(n // DEVICES) * 2.6)  # 1M punches: about 30 days
        out.append(
            Punch(
                id=f"{n:032x}",
                device=device,
                device_serial=f"SN{n % DEVICES:04d}",
                user_id=str(1 + (n * 7919) % 3000),
                local_time=local,
                utc_time=(local - dt.timedelta(hours=8)).replace(tzinfo=dt.UTC),
                utc_offset_seconds=8 * 3600,
                state=n % 2,
                state_name="check_out" if n % 2 else "check_in",
                verify=15,
                verify_name="face",
                work_code=0,
                source="poll",
                historical=True,
                raw=n.to_bytes(8, "little"),
            )
        )
    return out


def fill(path: Path, punches: int) -> float:
    store = Store.open(
        BufferSettings.model_validate({"path": str(path), "min_free_disk_mb": 0, "max_pending": 10_000_000}),
        gateway_id="bench",
    )
    started = time.perf_counter()
    try:
        for first in range(0, punches, 10_000):
            store.add_punches(_punches(first, min(10_000, punches - first)))
        meta = {"serial_number": "SN0000", "roster": {str(u): f"员工 {u}" for u in range(1, 3001)}}
        store.set_device_meta("door-0", meta)
    finally:
        store.close()
    return time.perf_counter() - started


def run_export(buffer: Path, fmt: str, out: Path) -> tuple[float, float, str]:
    command = [sys.executable, "-m", "punchgate.gateway", "export", "--buffer", str(buffer),
               "--from", "2026-03-01", "--to", "2026-04-30", "--format", fmt, "--out", str(out)]  # fmt: skip
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _pid, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    stdout = process.stdout.read() if process.stdout else ""
    stderr = process.stderr.read() if process.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"export {fmt} failed: {stderr}")
    return elapsed, usage.ru_maxrss / 1024, stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--punches", default="100000,1000000", help="comma-separated sizes")
    parser.add_argument("--formats", default="csv,xlsx")
    args = parser.parse_args(argv)
    lxml = importlib.util.find_spec("lxml") is not None  # openpyxl writes faster with it
    results: list[dict[str, object]] = []
    for punches in (int(n) for n in args.punches.split(",")):
        with tempfile.TemporaryDirectory(prefix="bench-export-") as work:
            buffer = Path(work) / "buffer.db"
            filled = fill(buffer, punches)
            for fmt in args.formats.split(","):
                out = Path(work) / f"export.{fmt}"
                load_before = os.getloadavg()[0]
                seconds, rss, said = run_export(buffer, fmt, out)
                result = {
                    "format": fmt,
                    "punches": punches,
                    "seconds": round(seconds, 1),
                    "rows_per_second": round(punches / seconds),
                    "peak_rss_mb": round(rss, 1),
                    "file_mb": round(out.stat().st_size / 2**20, 1),
                    "buffer_mb": round(buffer.stat().st_size / 2**20, 1),
                    "fill_seconds": round(filled, 1),
                    "lxml": lxml,
                    "load": {"before": round(load_before, 1), "after": round(os.getloadavg()[0], 1)},
                    "said": said,
                }
                results.append(result)
                print(json.dumps(result, ensure_ascii=False), flush=True)
                out.unlink()
    print("format  punches    rows/s  peak RSS MB")
    for r in results:
        print(f"{r['format']:<6} {r['punches']:>9,} {r['rows_per_second']:>9,} {r['peak_rss_mb']:>8}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
