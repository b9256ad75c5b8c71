"""A private mosquitto broker on a loopback port: for the demo, the benchmarks and the tests.

    broker = MosquittoBroker(workdir)      # plain TCP, anonymous, free port
    broker.start(); ...; broker.kill(); broker.start()   # restart on the same port
    broker.close()

Started as a child process with its own config file and stopped by its pid. Configured like a
production broker for our traffic: TCP_NODELAY on and queued QoS 1 messages never dropped, so
a backlog drain is not throttled by the broker's defaults. Optional password file
(`users={"name": "password"}`), TLS (`tls=BrokerTls(...)`) and persistence.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

LOOPBACK = "127.0.0.1"


class BrokerError(RuntimeError):
    pass


def find_mosquitto() -> str:
    found = os.environ.get("PUNCHGATE_MOSQUITTO") or shutil.which("mosquitto")
    if not found and os.access("/usr/sbin/mosquitto", os.X_OK):
        found = "/usr/sbin/mosquitto"
    if not found:
        raise BrokerError("mosquitto is not installed (./dev setup installs it: apt-get install mosquitto)")
    return found


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nobody listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_port(host: str, port: int, *, timeout: float, up: bool = True) -> bool:
    """Poll until the port accepts (up=True) or refuses (up=False) connections."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                accepting = True
        except OSError:
            accepting = False
        if accepting == up:
            return True
        time.sleep(0.02)
    return False


@dataclass(frozen=True)
class BrokerTls:
    ca_file: Path
    cert_file: Path
    key_file: Path
    require_certificate: bool = True  # mutual TLS: clients must present a cert signed by the CA


class MosquittoBroker:
    """One mosquitto process bound to loopback; restartable on the same port."""

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        port: int | None = None,
        users: dict[str, str] | None = None,
        tls: BrokerTls | None = None,
        persistent: bool = False,
        extra_config: str = "",
    ) -> None:
        self._own_workdir = workdir is None
        self.workdir = (
            Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="punchgate-broker-"))
        )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = LOOPBACK
        self.port = port or free_port()
        self.users = users
        self.tls = tls
        self.persistent = persistent
        self.extra_config = extra_config
        self.config_file = self.workdir / f"mosquitto-{self.port}.conf"
        self.log_file = self.workdir / f"mosquitto-{self.port}.log"
        self._process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _config(self) -> str:
        lines = [
            f"listener {self.port} {self.host}",
            "set_tcp_nodelay true",
            # Like a production broker sized for a backlog: never drop queued QoS 1 messages,
            # and no cap on messages in flight to one client.
            "max_queued_messages 0",
            "max_inflight_messages 0",
            # As root, mosquitto switches to its own user and could no longer read our files.
            "user root" if os.geteuid() == 0 else "",
            f"log_dest file {self.log_file}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
        ]
        if self.persistent:
            # Saved on a clean stop and every minute; a SIGKILL loses what came since.
            lines += ["persistence true", f"persistence_location {self.workdir}/", "autosave_interval 60"]
        else:
            lines.append("persistence false")
        if self.users is not None:
            lines += ["allow_anonymous false", f"password_file {self._password_file()}"]
        else:
            lines.append("allow_anonymous true")
        if self.tls is not None:
            lines += [
                f"cafile {self.tls.ca_file}",
                f"certfile {self.tls.cert_file}",
                f"keyfile {self.tls.key_file}",
                f"require_certificate {'true' if self.tls.require_certificate else 'false'}",
            ]
        lines.append(self.extra_config)
        return "\n".join(line for line in lines if line) + "\n"

    def _password_file(self) -> Path:
        assert self.users is not None
        path = self.workdir / f"passwords-{self.port}"
        path.write_text("")
        passwd = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
        for name, password in self.users.items():
            subprocess.run(
                [passwd, "-b", str(path), name, password], check=True, capture_output=True, timeout=30
            )
        path.chmod(0o600)
        return path

    def start(self, *, timeout: float = 15.0) -> None:
        """Start mosquitto and wait until its port accepts connections."""
        if self.running:
            return
        self.config_file.write_text(self._config())
        # The port may still be held for a moment by the previous (killed) process.
        wait_port(self.host, self.port, timeout=5.0, up=False)
        self._process = subprocess.Popen(
            [find_mosquitto(), "-c", str(self.config_file)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # Ctrl-C in a terminal goes to us, and we stop it ourselves
        )
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                err = self._process.stderr.read().decode(errors="replace") if self._process.stderr else ""
                raise BrokerError(
                    f"mosquitto exited with {self._process.returncode}: {err}\n{self.log_tail()}"
                )
            if wait_port(self.host, self.port, timeout=0.2):
                return
        self.stop()
        raise BrokerError(f"mosquitto did not listen on {self.host}:{self.port} within {timeout}s")

    def kill(self) -> None:
        """SIGKILL: the broker vanishes without a clean disconnect (a crash, a power cut)."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time. Safe to call when not running."""
        self._end(signal.SIGTERM)

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop, and remove the working folder if this broker made it."""
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _end(self, sig: signal.Signals) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        if process.stderr:
            process.stderr.close()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> MosquittoBroker:
        self.start()
        return self

    def __exit__(
        self, _type: type[BaseException] | None, _exc: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.close()
