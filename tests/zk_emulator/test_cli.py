"""The `emulate zk` command as a real process, queried by pyzk over loopback."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

import click
import pytest
from zk import ZK

from punchgate.drivers.zk.cli import parse_rate
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]


def free_port_pair() -> int:
    """A port P with P and P+1 free for both TCP and UDP right now."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        try:
            for offset in (0, 1):
                for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                    with socket.socket(socket.AF_INET, kind) as s:
                        s.bind(("127.0.0.1", port + offset))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair")


def test_parse_rate() -> None:
    assert parse_rate("2/s") == 2.0
    assert parse_rate("30/min") == 0.5
    assert parse_rate("0/s") == 0.0
    with pytest.raises(click.BadParameter):
        parse_rate("fast")


async def test_cli_runs_consecutive_terminals_and_stops_on_sigterm() -> None:
    port = free_port_pair()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "punchgate.drivers.zk.cli",
        "--port",
        str(port),
        "--count",
        "2",
        "--records",
        "120",
        "--serial-prefix",
        "CLI",
        "--punch-rate",
        "20/s",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:

        def query(terminal_port: int) -> tuple[str, int]:
            conn = ZK("127.0.0.1", terminal_port, timeout=5, ommit_ping=True).connect()
            try:
                conn.read_sizes()
                return conn.get_serialnumber(), conn.records
            finally:
                conn.disconnect()

        answers: list[tuple[str, int]] = []

        def live_punch_on_second_terminal() -> bool:
            try:
                answers.append(query(port + 1))
            except Exception:
                return False  # still starting up
            return answers[-1][1] > 120  # beyond the generated log: the generator punched (and logged)

        await asyncio.to_thread(
            wait_until,
            live_punch_on_second_terminal,
            timeout=20,
            interval=0.2,
            message=lambda: f"a generated punch on the second terminal (last answers: {answers[-3:]})",
        )
        assert answers[-1][0] == "CLI00002"
    finally:
        proc.terminate()
        output, _ = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 0
    text = output.decode()
    assert "zk_emulators_running" in text
    assert "zk_emulated_punch" in text
    assert "zk_emulators_stopped" in text
