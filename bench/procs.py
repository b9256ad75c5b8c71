"""The processes a benchmark or the chaos harness starts: mosquitto and the gateway daemon.

Each is started as a child, stopped by its own pid (never by name), and measured through
/proc (CPU seconds, peak resident memory) so the figures are the kernel's, not ours.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from punchgate.gateway.mosquitto import MosquittoBroker

LOOPBACK = "127.0.0.1"
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def port_accepts(port: int, host: str = LOOPBACK) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_for(condition: object, timeout: float, interval: float = 0.05) -> bool:
    """Poll `condition()` until true or the deadline passes (returns the last answer)."""
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return bool(condition())


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the command name: state is field 3, utime field 14, stime field 15 (1-based).
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def peak_rss_mb(pid: int) -> float:
    """The high-water mark of resident memory (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


def end_process(process: subprocess.Popen[bytes] | None, sig: signal.Signals, wait: float = 10.0) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(wait)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(wait)


class Broker(MosquittoBroker):
    """The project's mosquitto launcher, with the stop the harnesses use: `stop(kill=True)` is
    a crash (SIGKILL), a plain stop a clean shutdown (persistent state saved)."""

    def stop(self, *, kill: bool = False) -> None:
        if kill:
            self.kill()
        else:
            super().stop()


class GatewayProcess:
    """`python -m punchgate.gateway run --config FILE` as a child, its JSON log lines in a file."""

    def __init__(self, config: Path, log_path: Path) -> None:
        self.config = config
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("the gateway is not running")
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, env: dict[str, str] | None = None) -> None:
        if self.running:
            return
        with self.log_path.open("ab") as log_file:
            self._process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "punchgate.gateway",
                    "run",
                    "--config",
                    str(self.config),
                    "--log-format",
                    "json",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                env={**os.environ, **(env or {})},
                start_new_session=True,
            )
        self.starts += 1

    def kill(self) -> None:
        """SIGKILL: the gateway dies mid-whatever, as in a power cut or an OOM kill."""
        process, self._process = self._process, None
        end_process(process, signal.SIGKILL)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait for a clean exit (SIGKILL after `timeout`); the exit code."""
        process, self._process = self._process, None
        if process is None:
            return None
        end_process(process, signal.SIGTERM, wait=timeout)
        return process.returncode

    def exited(self) -> int | None:
        return None if self._process is None else self._process.poll()


def scratch_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))
