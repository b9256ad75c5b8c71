"""Run the real daemon (`python -m punchgate.gateway run --config FILE`) as a child process.

    gateway = GatewayProcess(config_path)           # log: config_path with suffix .log
    gateway.start()                                 # waits for READY=1 (ready_timeout=None: don't)
    gateway.wait_until(lambda: ..., timeout=30, message="...")   # fails fast if it exits
    gateway.kill(); gateway.start()                 # a crash, and a restart
    assert gateway.stop() == 0                      # SIGTERM, clean exit code

Readiness comes the way systemd learns it: the runner listens on a real NOTIFY_SOCKET and
waits for READY=1; any other condition (a log event, a port, a punch at the subscriber) is
waited for with `wait_until`, which gives up as soon as the process has exited. The process is
started in its own session and signalled by its pid only (SIGTERM, or SIGKILL for a crash),
and every gateway this module started and nobody stopped is killed when the interpreter
exits. The log is JSON lines (`--log-format json`), read back with `log_text`, `log_tail` and
`events`.

A one-off command (`punchgate probe …`, and the like) runs with `run_punchgate`, to its end.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.support.measure import cpu_seconds, peak_rss_mb
from tests.support.waiting import Condition, Message, wait_until, wait_until_async

REPO = Path(__file__).resolve().parents[2]

# Every daemon started and not yet stopped, held strongly: killed at exit even if its
# GatewayProcess was dropped.
_running: set[subprocess.Popen[bytes]] = set()


class GatewayProcess:
    def __init__(
        self, config_path: Path, *, log_path: Path | None = None, env: Mapping[str, str] | None = None
    ) -> None:
        self.config_path = config_path
        self.log_path = log_path or config_path.with_suffix(".log")
        self.env = dict(env or {})
        self.process: subprocess.Popen[bytes] | None = None
        self.notifications: list[str] = []
        self.starts = 0
        self._sock: socket.socket | None = None
        self._sock_dir: Path | None = None

    # --- the process -----------------------------------------------------------------------
    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("the gateway has not been started")
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def exited(self) -> int | None:
        """The exit code once the started process has ended by itself; None while it runs."""
        return None if self.process is None else self.process.poll()

    def start(
        self, *, ready_timeout: float | None = 30.0, extra_env: Mapping[str, str] | None = None
    ) -> GatewayProcess:
        """Start the daemon (a no-op while it runs) and, unless `ready_timeout` is None, wait for READY=1."""
        if self.running:
            return self
        if self.process is not None:  # a previous run that ended by itself
            _running.discard(self.process)
        self._close_socket()
        self._sock_dir = Path(tempfile.mkdtemp(prefix="pg-notify-"))  # short: AF_UNIX paths are limited
        notify_path = str(self._sock_dir / "notify.sock")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(notify_path)
        self.notifications = []
        env = {
            **os.environ,
            **self.env,
            **(extra_env or {}),
            "NOTIFY_SOCKET": notify_path,
            "PYTHONUNBUFFERED": "1",
        }
        command = [sys.executable, "-m", "punchgate.gateway", "run", "--config", str(self.config_path)]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*command, "--log-format", "json"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                cwd=REPO,
                start_new_session=True,  # a Ctrl-C in the terminal is ours; we stop it by pid
            )
        self.starts += 1
        _running.add(self.process)
        if ready_timeout is not None:
            self.wait_ready(ready_timeout)
        return self

    def send_signal(self, sig: signal.Signals) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)

    def stop(self, *, sig: signal.Signals | None = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        """Signal the process (SIGTERM by default; None: it was told already) and wait for it to
        exit; its exit code (None: not started).

        If it has not exited after `timeout` it is SIGKILLed and TimeoutExpired raised: a
        gateway that does not stop in time is a finding, and never left behind.
        """
        process, self.process = self.process, None
        try:
            if process is None:
                return None
            _running.discard(process)
            if process.poll() is None:
                if sig is not None:
                    process.send_signal(sig)
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(10)
                    raise
            return process.returncode
        finally:
            self._close_socket()

    def kill(self) -> None:
        """SIGKILL: a crash, with no chance to clean up (a power cut, an OOM kill)."""
        self.stop(sig=signal.SIGKILL)

    def _close_socket(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._sock_dir is not None:
            shutil.rmtree(self._sock_dir, ignore_errors=True)
            self._sock_dir = None

    # --- waiting -----------------------------------------------------------------------------
    def read_notifications(self, timeout: float = 0.2) -> list[str]:
        """Every sd_notify message so far (waiting up to `timeout` for the next one)."""
        if self._sock is None:
            return self.notifications
        self._sock.settimeout(timeout)
        try:
            while True:
                self.notifications.append(self._sock.recv(4096).decode())
                self._sock.settimeout(0.01)
        except (TimeoutError, BlockingIOError):
            pass
        return self.notifications

    def wait_for_notification(self, text: str, *, timeout: float) -> str:
        """The first sd_notify message containing `text`."""
        found: list[str] = []

        def arrived() -> bool:
            found[:] = [m for m in self.read_notifications(timeout=0.05) if text in m][:1]
            return bool(found)

        self.wait_until(arrived, timeout=timeout, message=f"{text!r} from the gateway", interval=0.0)
        return found[0]

    def wait_ready(self, timeout: float = 30.0) -> str:
        """Wait for READY=1, as systemd would; the message (it carries the first STATUS=)."""
        return self.wait_for_notification("READY=1", timeout=timeout)

    def _abort(self) -> str | None:
        code = self.exited()
        return None if code is None else f"the gateway exited with {code}"

    def _message(self, message: Message) -> Message:
        def text() -> str:
            head = message() if callable(message) else message
            return f"{head or 'condition'}\n--- gateway log ({self.log_path}), last lines:\n{self.log_tail()}\n---\n"

        return text

    def wait_until(
        self, condition: Condition, *, timeout: float, message: Message = "", interval: float = 0.1
    ) -> None:
        """`tests.support.waiting.wait_until`, giving up at once if the gateway exits; the
        failure names the log's last lines."""
        wait_until(
            condition, timeout=timeout, interval=interval, message=self._message(message), abort=self._abort
        )

    async def wait_until_async(
        self, condition: Condition, *, timeout: float, message: Message = "", interval: float = 0.1
    ) -> None:
        """`wait_until` from a coroutine (the event loop keeps running)."""
        await wait_until_async(
            condition, timeout=timeout, interval=interval, message=self._message(message), abort=self._abort
        )

    # --- what it said and used -----------------------------------------------------------------
    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:]) or "(empty log)"

    def events(self, name: str) -> list[dict[str, Any]]:
        """Every JSON log record with `event == name`, in order."""
        return log_events(self.log_path, name)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def peak_rss_mb(self) -> float:
        return peak_rss_mb(self.pid)

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


async def run_punchgate(*args: str, timeout: float = 60) -> tuple[int, str, str]:
    """Run `python -m punchgate.gateway ARGS…` in the checkout; (exit status, stdout, stderr).
    Never left running: killed when it has not ended within `timeout` seconds."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "punchgate.gateway",
        *args,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def log_events(path: Path, name: str) -> list[dict[str, Any]]:
    """Every record with `event == name` in a JSON-lines log, in order; other lines are skipped
    (a line cut short by a kill, or still being written, is not JSON yet)."""
    found: list[dict[str, Any]] = []
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return found
    for line in text.splitlines():
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("event") == name:
            found.append(record)
    return found


@atexit.register
def _kill_leftovers() -> None:
    """A test or benchmark that crashed must not leave a daemon running behind it."""
    for process in list(_running):
        if process.poll() is None:
            process.kill()
            process.wait(10)
