"""`python -m bench.chaos --record-from REPORT --dry-run`: a finished run's JSON report read
back, judged, and rendered as its docs/performance.md section, without touching any file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.gateway import REPO

KEPT = [REPO / "bench" / "results.json", REPO / "docs" / "performance.md"]


def record_dry_run(tmp_path: Path, report: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    before = [p.read_bytes() for p in KEPT]
    done = subprocess.run(
        [sys.executable, "-m", "bench.chaos", "--minutes", "2", "--record-from", str(path), "--dry-run"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert [p.read_bytes() for p in KEPT] == before, "a dry run wrote the results or the docs"
    return done


def test_a_clean_report_is_recorded_as_met(tmp_path: Path) -> None:
    report = {"produced": 10, "received": 10, "duplicates": 2, "actions": {"gateway_sigkill": 3}}
    done = record_dry_run(tmp_path, report)
    assert done.returncode == 0, done.stderr
    assert "### chaos: 2 minutes" in done.stdout
    assert "| lost | 0 punches | produced: 10.0 punches | 0.00× | 0 | met |" in done.stdout
    assert "| duplicates received | 2 records | produced: 10.0 records | 0.20× |  |  |" in done.stdout
    assert "chaos actions: gateway_sigkill 3" in done.stdout  # the actions came back from the JSON
    assert "duplicates: 2" in done.stdout  # and the report's own lines


def test_a_lost_punch_fails_and_is_rendered_as_missed(tmp_path: Path) -> None:
    done = record_dry_run(tmp_path, {"produced": 10, "received": 9, "lost": 1})
    assert done.returncode == 1
    assert "| lost | 1 punches | produced: 10.0 punches | 0.10× | 0 | **missed** |" in done.stdout


def test_an_unexpected_id_fails_the_run(tmp_path: Path) -> None:
    done = record_dry_run(tmp_path, {"produced": 10, "received": 10, "unexpected": 1})
    assert done.returncode == 1
