"""Two minutes of chaos around a real gateway: not one punch may be lost.

Runs bench.chaos in this process: emulated terminals punching steadily, the gateway as a
child process, a real mosquitto, a real subscriber; the broker is crashed and restarted, the
gateway SIGKILLed and restarted, terminals drop connections, hang, reboot and send garbage.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.chaos import ChaosOptions, run_chaos


@pytest.mark.slow
@pytest.mark.timeout(420)
async def test_two_minutes_of_chaos_lose_no_punch(tmp_path: Path) -> None:
    options = ChaosOptions(minutes=2.0, seed=20240607, workdir=tmp_path / "chaos", keep_workdir=True)
    report = await run_chaos(options)
    summary = "\n".join(report.lines())

    assert report.produced > 8 * 300, summary  # the history plus two minutes of punching
    assert report.lost == 0, summary
    assert report.unexpected == 0, summary  # every id received is a punch a terminal holds
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
        assert report.actions[action] >= 1, summary
    assert report.gateway_starts >= 2, summary
    assert report.unexpected_gateway_exits == 0, summary  # it only died when we killed it
    assert report.clean_exit_code == 0, summary  # and it still stops cleanly on SIGTERM
    # A crashed broker may lose what it had just acknowledged (never the gateway's doing),
    # and each such punch must be accounted for rather than vanish.
    assert report.received + report.lost + report.lost_in_broker_crash == report.produced, summary
