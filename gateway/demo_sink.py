"""The demo's central consumer: the reference sink (`punchgate sink run`) on a SQLite file.

The demo's gateway runs in `central` delivery, so a punch counts as delivered only once this
sink has committed it to `sink.db` in the demo's folder and confirmed it on `{base}/confirm`.
The sink is a child process, logging JSON to `sink.log` beside the gateway's log.
`start_sink` returns once the sink has subscribed (its `sink_connected` log line): its
persistent session must exist before the gateway publishes, or the first batches would only
reach it through the gateway's re-send after `resend_after`.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

SINK_CLIENT_ID = "demo-sink"
CONNECT_TIMEOUT = 30.0  # the sink's start-up: Alembic migrations on a fresh file, then the broker


def _connected(log: Path) -> bool:
    if not log.exists():
        return False
    for line in log.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict) and event.get("event") == "sink_connected":
            return True
    return False


def _spawn(workdir: Path, broker_port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "punchgate.gateway",
                "sink",
                "run",
                "--db",
                str(workdir / "sink.db"),
                "--port",
                str(broker_port),
                "--client-id",
                SINK_CLIENT_ID,
                # Its /healthz would take a port the demo does not show; the table shows the sink.
                "--http",
                "off",
                "--log-format",
                "json",
            ],
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
        )


async def start_sink(workdir: Path, broker_port: int) -> subprocess.Popen[bytes]:
    """`punchgate sink run` on `workdir/sink.db`, once it is subscribed; raises if it exits
    or does not subscribe within CONNECT_TIMEOUT (the log says why)."""
    log = workdir / "sink.log"
    sink = _spawn(workdir, broker_port, log)
    deadline = time.monotonic() + CONNECT_TIMEOUT
    while not await asyncio.to_thread(_connected, log):
        if sink.poll() is not None:
            raise RuntimeError(f"the sink exited with {sink.returncode}: see {log}")
        if time.monotonic() > deadline:
            await stop_sink(sink)
            raise RuntimeError(f"the sink did not connect within {CONNECT_TIMEOUT:g} s: see {log}")
        await asyncio.sleep(0.1)
    return sink


async def stop_sink(sink: subprocess.Popen[bytes]) -> None:
    if sink.poll() is None:
        sink.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(sink.wait, 15)
        except subprocess.TimeoutExpired:
            sink.kill()
