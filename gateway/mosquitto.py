"""A private mosquitto broker on a free loopback port, for the demo and the benchmarks.

Started as a child process with its own config file in a temporary folder, and stopped by
its pid. Configured like a production broker for our traffic (no persistence needed here,
TCP_NODELAY on, unlimited in-flight and queued messages so a backlog drain is not throttled
by the broker's defaults).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType


class BrokerError(RuntimeError):
    pass


def find_mosquitto() -> str:
    found = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None)
    if not found:
        raise BrokerError("mosquitto is not installed (./dev setup installs it: apt-get install mosquitto)")
    return found


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class PrivateBroker:
    def __init__(self, *, port: int | None = None, host: str = "127.0.0.1", extra_config: str = "") -> None:
        self.host = host
        self.port = port or free_port(host)
        self.extra_config = extra_config
        self._dir = Path(tempfile.mkdtemp(prefix="punchgate-broker-"))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        config = self._dir / "mosquitto.conf"
        config.write_text(
            f"listener {self.port} {self.host}\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "set_tcp_nodelay true\n"
            "max_inflight_messages 0\n"
            "max_queued_messages 0\n"
            "log_type error\n"
            "log_dest stderr\n" + self.extra_config
        )
        log_file = (self._dir / "broker.log").open("ab")
        self._process = subprocess.Popen(
            [find_mosquitto(), "-c", str(config)], stdout=log_file, stderr=log_file, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise BrokerError(f"mosquitto exited at start: {(self._dir / 'broker.log').read_text()[-500:]}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise BrokerError(f"mosquitto did not listen on {self.host}:{self.port} within {timeout} s")

    def stop(self, *, kill: bool = False) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> PrivateBroker:
        self.start()
        return self

    def __exit__(self, *_: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]) -> None:
        self.close()
