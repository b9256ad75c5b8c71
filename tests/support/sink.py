"""`punchgate sink run` as a child process for tests and benchmarks, started and signalled by its pid."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from punchgate.gateway.mosquitto import free_port
from tests.support.gateway import REPO, log_events


class SinkProcess:
    def __init__(
        self,
        *,
        broker_port: int,
        db: str,
        client_id: str,
        log: Path,
        group: str = "punchgate-sink",
        **extra: str,
    ) -> None:
        self.http_port = free_port()
        self.log = log
        self.command = [
            sys.executable, "-m", "punchgate.gateway", "sink", "run", "--db", db, "--port", str(broker_port),
            "--client-id", client_id, "--group", group, "--http", f"127.0.0.1:{self.http_port}",
            "--log-format", "json",
        ]  # fmt: skip
        for key, value in extra.items():
            self.command += [f"--{key.replace('_', '-')}", value]
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> SinkProcess:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO
            )
        self.starts += 1
        return self

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def connected(self) -> bool:
        """Connected and subscribed in this run (the log says so once per connect)."""
        return len(self.events("sink_connected")) >= self.starts

    def events(self, name: str) -> list[dict[str, Any]]:
        return log_events(self.log, name)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 30) -> int | None:
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(sig)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
            raise

    def kill(self) -> None:
        with contextlib.suppress(Exception):
            self.stop(signal.SIGKILL)
