"""Run the real daemon (`python -m punchgate.gateway run`) as a child process, for end-to-end tests.

Readiness comes the way systemd learns it: the test listens on a real NOTIFY_SOCKET and
waits for READY=1. The process is stopped by its pid (SIGTERM, or SIGKILL to simulate a crash).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_config(
    *,
    gateway_id: str,
    broker_port: int,
    buffer_path: Path,
    terminals: list[Mapping[str, Any]],
    http_port: int | None = None,
    top: Mapping[str, Any] | None = None,
    mqtt: Mapping[str, Any] | None = None,
    buffer: Mapping[str, Any] | None = None,
) -> str:
    lines = [f"gateway_id = {_toml_value(gateway_id)}"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in (top or {}).items()]
    lines += ["[mqtt]", 'host = "127.0.0.1"', f"port = {broker_port}"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in (mqtt or {}).items()]
    lines += ["[buffer]", f"path = {_toml_value(buffer_path)}"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in (buffer or {}).items()]
    lines += ["[http]"] + ([f"port = {http_port}"] if http_port else ["enabled = false"])
    for terminal in terminals:
        lines.append("[[terminals]]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in terminal.items()]
    return "\n".join(lines) + "\n"


class GatewayProcess:
    def __init__(self, config_path: Path, *, env: Mapping[str, str] | None = None) -> None:
        self.config_path = config_path
        self.env = dict(env or {})
        self.log_path = config_path.with_suffix(".log")
        self.process: subprocess.Popen[bytes] | None = None
        self.notifications: list[str] = []
        self._sock: socket.socket | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self, *, wait_ready: float = 30.0, extra_env: Mapping[str, str] | None = None) -> None:
        notify_path = str(self.config_path.parent / f"notify-{time.monotonic_ns()}.sock")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(notify_path)
        self._sock.settimeout(0.2)
        env = {**os.environ, **self.env, **(extra_env or {}), "NOTIFY_SOCKET": notify_path}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "punchgate.gateway",
                    "run",
                    "--config",
                    str(self.config_path),
                    "--log-format",
                    "json",
                ],
                stdout=log,
                stderr=log,
                env=env,
                cwd=REPO,
            )
        if wait_ready:
            self.wait_for_notification("READY=1", timeout=wait_ready)

    def read_notifications(self, timeout: float = 0.2) -> list[str]:
        assert self._sock is not None
        self._sock.settimeout(timeout)
        try:
            while True:
                self.notifications.append(self._sock.recv(4096).decode())
                self._sock.settimeout(0.01)
        except (TimeoutError, BlockingIOError):
            pass
        return self.notifications

    def wait_for_notification(self, text: str, *, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in self.read_notifications():
                if text in message:
                    return message
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.process.returncode}:\n{self.log_tail()}")
        raise TimeoutError(f"no {text!r} from the gateway within {timeout}s:\n{self.log_tail()}")

    def stop(self, *, sig: signal.Signals = signal.SIGTERM, timeout: float = 30.0) -> int:
        process = self.process
        if process is None:
            return 0
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
                raise
        self.process = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        return process.returncode

    def kill(self) -> None:
        """SIGKILL: a crash, with no chance to clean up."""
        self.stop(sig=signal.SIGKILL)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""
