"""`emulate zk-push` as a real process: faults switched from outside through its fault file
and SIGUSR1, seen on the wire by the fake receiver."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import click
import pytest

from punchgate.drivers.zk_push.cli import parse_rate, serials
from punchgate.drivers.zk_push.emulator.faults import FaultLine, parse_fault_file, parse_fault_spec
from tests.support.waiting import wait_until_async
from tests.zk_push.test_emulator import FakeReceiver, receiver

__all__ = ["receiver"]  # the fixture, shared with test_emulator.py

ROOT = Path(__file__).resolve().parents[2]
CLI_SN = "CLIPUSH7"


def test_parse_rate_and_serials() -> None:
    assert parse_rate("30/min") == 0.5
    assert parse_rate("2/s") == 2.0
    assert parse_rate("0/min") == 0.0
    with pytest.raises(click.BadParameter):
        parse_rate("often")
    assert serials("SN", 1) == ["SN"]
    assert serials("SN", 3) == ["SN001", "SN002", "SN003"]


def test_fault_specs_and_the_fault_file() -> None:
    assert parse_fault_spec("wrong_sn:sn=ABC") == ("wrong_sn", {"sn": "ABC"})
    assert parse_fault_spec("slow_posts:chunk_bytes=8,interval=0.5") == (
        "slow_posts",
        {"chunk_bytes": 8, "interval": 0.5},
    )
    with pytest.raises(ValueError, match="unknown fault"):
        parse_fault_spec("on_fire")
    text = "# faults\n\ndead_battery\n@SN002 garbage_lines count=2 times=1  # one terminal\n"
    assert parse_fault_file(text) == [
        FaultLine(None, "dead_battery", {}),
        FaultLine("SN002", "garbage_lines", {"count": 2, "times": 1}),
    ]
    with pytest.raises(ValueError, match="line 2: fault 'wrong_sn' takes no parameter colour"):
        parse_fault_file("dead_battery\nwrong_sn colour=red\n")
    with pytest.raises(ValueError, match="line 1: 'oops': expected key=value"):
        parse_fault_file("slow_posts oops\n")


class Output:
    """What the process logs, line by line, as it comes."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    async def collect(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        async for line in process.stdout:
            self.lines.append(line.decode(errors="replace"))

    def has(self, *words: str) -> bool:
        return any(all(word in line for word in words) for line in self.lines)


Running = tuple[asyncio.subprocess.Process, Path, Output]


@pytest.fixture
async def cli_process(receiver: FakeReceiver, tmp_path: Path) -> AsyncIterator[Running]:
    fault_file = tmp_path / "faults.txt"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "punchgate.drivers.zk_push.cli",
        "--server",
        receiver.url,
        "--sn",
        CLI_SN,
        "--records",
        "3",
        "--users",
        "3",
        "--punch-rate",
        "1200/min",
        "--reboot-seconds",
        "0.1",
        "--fault-file",
        str(fault_file),
        "--log-level",
        "warning",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output = Output()
    reader = asyncio.create_task(output.collect(process))
    try:
        yield process, fault_file, output
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await reader


async def test_faults_switched_from_outside_through_the_fault_file_and_sigusr1(
    receiver: FakeReceiver, cli_process: Running
) -> None:
    process, fault_file, output = cli_process

    def exited() -> str | None:
        return None if process.returncode is None else f"the emulator exited with {process.returncode}"

    await wait_until_async(
        lambda: len(receiver.lines("ATTLOG", sn=CLI_SN)) >= 5, timeout=15, abort=exited, message="uploads"
    )

    fault_file.write_text("wrong_sn sn=OUTSIDE\ndead_battery\n", encoding="utf-8")
    process.send_signal(signal.SIGUSR1)
    await wait_until_async(
        lambda: any("\t2000-01-01 " in line for line in receiver.lines("ATTLOG", sn="OUTSIDE")),
        timeout=10,
        abort=exited,
        message="punches from 2000 under the wrong serial",
    )

    fault_file.write_text("no_such_fault\n", encoding="utf-8")  # rejected: changes nothing
    process.send_signal(signal.SIGUSR1)
    await wait_until_async(
        lambda: output.has("zk_push_fault_file_rejected", "no_such_fault"),
        timeout=10,
        abort=exited,
        message=lambda: "the rejection logged; output: " + "".join(output.lines[-5:]),
    )
    fault_file.write_text("", encoding="utf-8")  # the empty set: every fault off
    process.send_signal(signal.SIGUSR1)
    seen = len(receiver.requests)
    await wait_until_async(
        lambda: any(
            r.query.get("SN") == CLI_SN and "\t2000-" not in r.body.decode("gb18030", "replace")
            for r in receiver.posts("ATTLOG", sn=CLI_SN)
            if r in receiver.requests[seen:]
        ),
        timeout=10,
        abort=exited,
        message="punches from today under the right serial again",
    )

    process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(10):
        assert await process.wait() == 0
