"""A minute of chaos around a real gateway: not one punch may be lost.

Runs the chaos harness as a user does, `python -m bench.chaos`, and checks its JSON report:
emulated terminals punching steadily, the gateway as a child process, a real mosquitto, a
real subscriber; the broker is crashed and restarted, the gateway SIGKILLed and restarted,
terminals drop connections, hang, reboot and send garbage.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.gateway import REPO


def run_chaos(workdir: Path, *args: str, timeout: float) -> tuple[int, dict[str, Any], str]:
    """(exit code, JSON report, output) of one harness run; interrupted (so that it stops the
    broker and gateway it started) if it overruns `timeout`."""
    report = workdir / "report.json"
    output = workdir / "output.txt"
    workdir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "bench.chaos", "--workdir", str(workdir), "--json", str(report), *args]
    with output.open("wb") as out:
        process = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGINT)  # the harness tears down what it started
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
            raise
    text = output.read_text(errors="replace")
    assert report.exists(), f"no report (exit code {code}):\n{text[-3000:]}"
    return code, json.loads(report.read_text()), text


@pytest.mark.slow
@pytest.mark.timeout(480)
def test_a_minute_of_chaos_loses_no_punch(tmp_path: Path) -> None:
    # The short run: one minute, an action every 3 s on average (every kind comes once first,
    # so all of them happen); `./dev chaos --minutes 30` is the long one. Two push terminals
    # upload a backlog each and then punch in real time beside the eight pulled ones.
    code, report, output = run_chaos(
        tmp_path / "chaos",
        "--minutes",
        "1",
        "--interval",
        "3",
        "--seed",
        "20240607",
        "--push-terminals",
        "2",
        timeout=360,
    )
    summary = output[-4000:]

    assert code == 0, summary
    assert report["produced"] > 8 * 300 + 2 * 1000, (
        summary
    )  # the histories, the backlogs, a minute of punching
    assert report["lost"] == 0, summary
    assert report["unexpected"] == 0, summary  # every id received is a punch a terminal holds
    # Every kind of failure really happened during the run.
    for action in (
        "gateway_sigkill",
        "broker_crash",
        "broker_restart",
        "terminal_drop_mid_transfer",
        "terminal_hang",
        "terminal_reboot",
        "terminal_garbage_replies",
    ):
        assert report["actions"].get(action, 0) >= 1, summary
    assert report["gateway_starts"] >= 2, summary
    assert report["unexpected_gateway_exits"] == 0, summary  # it only died when we killed it
    assert report["clean_exit_code"] == 0, summary  # and it still stops cleanly on SIGTERM
    # A crashed broker may lose what it had just acknowledged (never the gateway's doing),
    # and each such punch must be accounted for rather than vanish.
    accounted = report["received"] + report["lost"] + report["lost_in_broker_crash"]
    assert accounted == report["produced"], summary
