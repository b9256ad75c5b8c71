"""systemd/punchgate-sink.service verifies and stays as locked down as it is today."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "punchgate-sink.service"
INSTALLED_COMMAND = "/opt/punchgate/venv/bin/punchgate"
EXPOSURE_LIMIT = 1.2

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is missing")


def _analyze(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


def test_the_sink_unit_verifies(tmp_path: Path) -> None:
    unit = UNIT.read_text()
    assert f"{INSTALLED_COMMAND} sink run" in unit
    (tmp_path / UNIT.name).write_text(
        unit.replace(INSTALLED_COMMAND, str(Path(sys.executable).parent / "punchgate"))
    )
    result = _analyze("verify", "--man=no", tmp_path / UNIT.name)
    problems = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if UNIT.name in line and "Failed to" not in line
    ]
    assert problems == [], problems


def test_the_sink_unit_exposure_does_not_regress() -> None:
    result = _analyze("security", "--offline=yes", f"--threshold={round(EXPOSURE_LIMIT * 10)}", UNIT)
    found = re.search(r"Overall exposure level for punchgate-sink\.service: (\d+\.\d)", result.stdout)
    assert found and result.returncode == 0 and float(found[1]) <= EXPOSURE_LIMIT, result.stdout
