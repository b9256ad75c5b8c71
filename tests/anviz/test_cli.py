"""`punchgate emulate anviz` and `punchgate probe anviz://…` against real ptys and sockets."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import click
import pytest
from click.testing import CliRunner

from punchgate.drivers.anviz.cli import endpoint_from_probe_url, probe_command
from punchgate.drivers.anviz.emulator import EmulatedTerminal, Faults, PtyBus
from punchgate.drivers.anviz.endpoint import SerialEndpoint, TcpEndpoint


def test_probe_urls() -> None:
    assert endpoint_from_probe_url("anviz:///dev/ttyUSB0?baud=19200") == SerialEndpoint(
        port="/dev/ttyUSB0", baud=19200
    )
    assert endpoint_from_probe_url("anviz://10.1.2.3") == TcpEndpoint(host="10.1.2.3")
    assert endpoint_from_probe_url("anviz://10.1.2.3:6000") == TcpEndpoint(host="10.1.2.3", port=6000)
    with pytest.raises(click.BadParameter, match="anviz:///dev/ttyUSB0"):
        endpoint_from_probe_url("anviz:///dev/ttyUSB0?baud=fast")


def test_probe_prints_identity_counts_clock_and_last_punches() -> None:
    terminal = EmulatedTerminal(21, serial_number="PROBE-ME", faults=Faults(noise_every=2))
    terminal.add_history(30)
    with PtyBus([EmulatedTerminal(20), terminal]) as bus:
        result = CliRunner().invoke(
            probe_command, [f"anviz://{bus.path}?gap_ms=0&quiet_ms=40", "--device-id", "21", "--last", "2"]
        )
    assert result.exit_code == 0, result.output
    out = result.output
    assert "PROBE-ME" in out and "TC400" in out and "03.26.93" in out
    assert "30 of 50000" in out and "terminal clock" in out
    assert "last 2 of 30 new records" in out
    assert terminal.records[-1].encode().hex()[:12] in out
    assert terminal.new_count == 30  # the probe never clears anything


def test_probe_of_a_silent_terminal_fails_clearly() -> None:
    with PtyBus([EmulatedTerminal(1)]) as bus:
        result = CliRunner().invoke(
            probe_command,
            [f"anviz://{bus.path}?quiet_ms=40", "--device-id", "9", "--timeout", "0.2", "--retries", "0"],
        )
    assert result.exit_code == 1
    assert "probe failed (unreachable)" in result.output and "no answer after 1 attempts" in result.output


@dataclass
class Emulator:
    process: subprocess.Popen[str]
    found: dict[str, str]  # "pty" / "tcp" -> where it serves
    lines: queue.Queue[str]  # the rest of its stdout


@pytest.fixture
def emulator_process() -> Iterator[Emulator]:
    code = "from drivers.anviz.cli import emulate_command; emulate_command()"
    args = ["--device-id", "3", "--device-id", "4", "--records", "12", "--tcp-port", "0"]
    process = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
    )
    found: dict[str, str] = {}
    lines: queue.Queue[str] = queue.Queue()
    # a thread reads stdout, so that waiting for the two lines has a deadline
    stdout = process.stdout
    assert stdout is not None

    def pump() -> None:
        for line in iter(stdout.readline, ""):
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    try:
        deadline = time.monotonic() + 20
        while len(found) < 2 and time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                line = lines.get(timeout=0.5)
                if line.startswith(("pty: ", "tcp: ")):
                    found[line[:3]] = line.split()[1]
        yield Emulator(process, found, lines)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_emulate_prints_the_pty_and_serves_until_interrupted(
    emulator_process: Emulator,
) -> None:
    process, found = emulator_process.process, emulator_process.found
    assert set(found) == {"pty", "tcp"}, found
    runner = CliRunner()
    serial = runner.invoke(probe_command, [f"anviz://{found['pty']}?gap_ms=0", "--device-id", "4"])
    assert serial.exit_code == 0, serial.output
    assert "AZ0000000004" in serial.output and "12 of 50000" in serial.output
    tcp = runner.invoke(probe_command, [f"anviz://{found['tcp']}", "--device-id", "3", "--records", "none"])
    assert tcp.exit_code == 0, tcp.output
    assert "AZ0000000003" in tcp.output

    os.kill(process.pid, signal.SIGINT)
    assert process.wait(timeout=10) == 0
    rest: list[str] = []
    with contextlib.suppress(queue.Empty):
        while "stopped\n" not in rest:
            rest.append(emulator_process.lines.get(timeout=5))
    assert "stopped\n" in rest
