"""The README's main command, `punchgate demo`, runs end to end and shows punches arriving."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_demo_runs_and_punches_arrive() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "punchgate.gateway", "demo", "--duration", "20"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    match = re.search(r"stopped: (\d+) punches on the terminals, (\d+) unique received", result.stdout)
    assert match, result.stdout[-2000:]
    produced, received = int(match[1]), int(match[2])
    assert produced > 150
    # A serial terminal's newest punch can still be waiting for its next poll (10 s);
    # everything else has arrived.
    assert received >= produced - 2
    for terminal in ("gate-north", "gate-south", "canteen", "assembly-1", "assembly-2"):
        assert terminal in result.stdout
