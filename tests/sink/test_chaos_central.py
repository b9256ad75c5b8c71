"""`./dev chaos --central` as a user runs it (`python -m bench.chaos --central`), for one minute:
broker without persistence, gateway, sink and PostgreSQL crashed at random; its JSON report must
show every punch in PostgreSQL exactly once, nothing left unconfirmed, and every kind of fault.
Long (./dev test-long): the short central chaos of the default suite is in
test_sink_end_to_end.py's harness (tests/sink/chaos.py)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.gateway import REPO


@pytest.mark.long
@pytest.mark.timeout(900)
def test_a_minute_of_central_chaos_stores_every_punch_once(tmp_path: Path) -> None:
    workdir, report_file = tmp_path / "chaos", tmp_path / "report.json"
    command = [
        sys.executable, "-m", "bench.chaos", "--central", "--minutes", "1", "--seed", "1414",
        "--interval", "4", "--push-terminals", "2", "--workdir", str(workdir), "--json", str(report_file),
    ]  # fmt: skip
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        output, _ = process.communicate(timeout=720)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGINT)  # the harness stops what it started
        process.communicate(timeout=120)
        raise
    summary = output.decode(errors="replace")[-4000:]
    assert process.returncode == 0, summary
    report = json.loads(report_file.read_text())
    assert report["produced"] > 8 * 300 + 2 * 1000, summary  # histories, push backlogs, a minute of punching
    assert report["stored"] == report["produced"] and report["lost"] == 0, summary
    assert report["duplicate_rows"] == 0 and report["unexpected"] == 0, summary
    assert report["unconfirmed_at_end"] == 0, summary
    for action in ("broker_crash", "gateway_sigkill", "sink_sigkill", "postgres_crash"):
        assert report["actions"].get(action, 0) >= 1, summary
    assert report["unexpected_gateway_exits"] == 0 and report["clean_exit_code"] == 0, summary
