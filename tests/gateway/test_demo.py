"""The README's main command, `punchgate demo`, runs end to end and shows punches arriving.

Run as `./dev demo | tee` would run it: stdout is a pipe, not a terminal. What it prints must
come as it happens (not all at the end), name the status page, /metrics and the status
command (which must work while the demo runs), and the folder with the logs, which stays.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DURATION = 20


def _read_lines(process: subprocess.Popen[str], lines: list[tuple[float, bool, str]]) -> None:
    """(when, demo still running, text) of every line, as it arrives."""
    assert process.stdout is not None
    for line in process.stdout:
        lines.append((time.monotonic(), process.poll() is None, line.rstrip("\n")))


def test_demo_runs_and_punches_arrive_as_they_happen() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "punchgate.gateway", "demo", "--duration", str(DURATION)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
        env={**os.environ, "COLUMNS": "100"},
    )
    lines: list[tuple[float, bool, str]] = []
    reader = threading.Thread(target=_read_lines, args=(process, lines), daemon=True)
    reader.start()
    kept: Path | None = None
    try:
        status = _status_while_running(process, lines)
        process.wait(120)
        reader.join(10)
        text = "\n".join(line for _, _, line in lines)
        assert process.returncode == 0, text[-3000:]
        folder = re.search(r"kept in (\S+):", text)
        assert folder, text[-2000:]
        kept = Path(folder[1])
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    # The status command it printed worked against the running demo.
    assert status.returncode in (0, 1), status.stdout + status.stderr
    assert "gate-north" in status.stdout and "canteen" in status.stdout

    match = re.search(r"stopped: (\d+) punches on the terminals, (\d+) unique received", text)
    assert match, text[-2000:]
    produced, received = int(match[1]), int(match[2])
    assert produced > 150
    # A serial terminal's newest punch can still be waiting for its next poll (10 s);
    # everything else has arrived.
    assert received >= produced - 2
    for terminal in ("gate-north", "gate-south", "canteen", "assembly-1", "assembly-2"):
        assert terminal in text

    # Piped, it printed each arrival while running, not everything at the end.
    live = [(when, line) for when, running, line in lines if running and " punch: " in line]
    assert len(live) >= 10, text[-2000:]
    assert live[-1][0] - live[0][0] > DURATION / 2  # spread over the run

    # The logs stay after the demo, where it said.
    try:
        assert kept.is_dir() and not kept.is_relative_to(REPO)
        assert "gateway_started" in (kept / "gateway.log").read_text()
        assert (kept / "emulators.log").stat().st_size > 0
        assert (kept / "punchgate.toml").is_file()
    finally:
        shutil.rmtree(kept, ignore_errors=True)


def _status_while_running(
    process: subprocess.Popen[str], lines: list[tuple[float, bool, str]]
) -> subprocess.CompletedProcess[str]:
    """Once the demo shows live punches, run the `status` command it printed; its result."""
    deadline = time.monotonic() + 60
    command: list[str] | None = None
    while time.monotonic() < deadline and process.poll() is None:
        text = "\n".join(line for _, _, line in lines)
        printed = re.search(r"status +(\S*punchgate) status --url (http://127\.0\.0\.1:\d+) ", text)
        if printed and " punch: " in text:
            url = printed[2]
            assert f"status page  {url}/" in text and f"metrics      {url}/metrics" in text, text
            command = [sys.executable, "-m", "punchgate.gateway", "status", "--url", url]
            break
        time.sleep(0.2)
    assert command is not None, "\n".join(line for _, _, line in lines)[-2000:]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=60, cwd=REPO, env={**os.environ, "COLUMNS": "200"}
    )
