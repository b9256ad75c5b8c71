"""A real mosquitto broker for tests and benchmarks, on a free loopback port.

    broker = Broker(tmp_path)            # plain TCP, anonymous
    broker.start(); ...; broker.kill(); broker.start()   # restart on the same port
    broker.stop()

Optional password file (`users={"name": "password"}`) and TLS (`tls=BrokerTls(...)`; see
`make_test_pki`). The process is started and stopped by pid; `stop()` is idempotent and the
pytest fixtures in tests/conftest.py always call it.

`Gate` is a small TCP relay in front of the broker that a test can close to hold one client
off (e.g. keep the gateway away until a subscriber has resubscribed after a broker restart).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

MOSQUITTO = os.environ.get("PUNCHGATE_MOSQUITTO", "/usr/sbin/mosquitto")
MOSQUITTO_PASSWD = os.environ.get("PUNCHGATE_MOSQUITTO_PASSWD", "/usr/bin/mosquitto_passwd")
LOOPBACK = "127.0.0.1"


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


@dataclass(frozen=True)
class BrokerPki:
    ca_file: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def broker_tls(self, *, require_certificate: bool = True) -> BrokerTls:
        return BrokerTls(self.ca_file, self.server_cert, self.server_key, require_certificate)


def make_test_pki(directory: Path) -> BrokerPki:
    """A throwaway CA, a server cert for 127.0.0.1/localhost and a client cert (openssl CLI)."""
    directory.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=punchgate test CA",
        "-keyout", "ca.key", "-out", "ca.crt")  # fmt: skip
    (directory / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, subject, ext in (("server", "/CN=127.0.0.1", ["-extfile", "server.ext"]),
                               ("client", "/CN=punchgate-gateway", [])):  # fmt: skip
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", subject, "-keyout", f"{name}.key",
            "-out", f"{name}.csr")  # fmt: skip
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-out", f"{name}.crt", *ext)  # fmt: skip
    return BrokerPki(
        ca_file=directory / "ca.crt",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
    )


class Broker:
    """One mosquitto process bound to loopback; restartable on the same port."""

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        users: dict[str, str] | None = None,
        tls: BrokerTls | None = None,
        extra_config: str = "",
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = LOOPBACK
        self.port = port or free_port()
        self.users = users
        self.tls = tls
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

    def _write_config(self) -> None:
        lines = [
            f"listener {self.port} {self.host}",
            "persistence false",
            "set_tcp_nodelay true",
            # Like a production broker sized for a backlog: never drop queued QoS 1 messages.
            "max_queued_messages 0",
            "user root" if os.geteuid() == 0 else "",
            f"log_dest file {self.log_file}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
        ]
        if self.users is not None:
            password_file = self.workdir / f"passwords-{self.port}"
            password_file.write_text("")
            for name, password in self.users.items():
                subprocess.run(
                    [MOSQUITTO_PASSWD, "-b", str(password_file), name, password],
                    check=True,
                    capture_output=True,
                    timeout=30,
                )
            password_file.chmod(0o600)
            lines += ["allow_anonymous false", f"password_file {password_file}"]
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
        self.config_file.write_text("\n".join(line for line in lines if line) + "\n")

    def start(self, *, timeout: float = 15.0) -> None:
        """Start mosquitto and wait until its port accepts connections."""
        if self.running:
            return
        self._write_config()
        # The port may still be held for a moment by the previous (killed) process.
        wait_port(self.host, self.port, timeout=5.0, up=False)
        self._process = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.config_file)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                err = self._process.stderr.read().decode(errors="replace") if self._process.stderr else ""
                raise RuntimeError(
                    f"mosquitto exited with {self._process.returncode}: {err}\n{self.log_tail()}"
                )
            if wait_port(self.host, self.port, timeout=0.2):
                return
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on {self.host}:{self.port} within {timeout}s")

    def kill(self) -> None:
        """SIGKILL: the broker vanishes without a clean disconnect (a crash, a power cut)."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time. Safe to call when not running."""
        self._end(signal.SIGTERM)

    def restart(self) -> None:
        self.stop()
        self.start()

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

    def __enter__(self) -> Broker:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


class Gate:
    """A TCP relay on its own loopback port in front of a broker, which the test opens and closes.

    Closed, it does not listen at all (clients get "connection refused", like a broker that is
    down). Open, it relays each connection byte for byte; closing it also drops live relays.
    """

    def __init__(self, target_host: str, target_port: int, *, port: int | None = None) -> None:
        self.target = (target_host, target_port)
        self.host = LOOPBACK
        self.port = port or free_port()
        self._server: asyncio.Server | None = None
        self._relays: set[asyncio.Task[None]] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self.accepted = 0

    @property
    def is_open(self) -> bool:
        return self._server is not None

    async def open(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._relay, self.host, self.port, reuse_address=True)

    def freeze(self) -> None:
        """Hold every byte in both directions while connections stay up (a silent partition)."""
        self._flowing.clear()

    def thaw(self) -> None:
        """Let held and new bytes flow again."""
        self._flowing.set()

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for task in list(self._relays):
            task.cancel()
        if self._relays:
            await asyncio.gather(*self._relays, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._relays.add(task)
        self.accepted += 1
        upstream_writer: asyncio.StreamWriter | None = None
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
            await asyncio.gather(
                _pump(reader, upstream_writer, self._flowing), _pump(upstream_reader, writer, self._flowing)
            )
        except (OSError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # Only `close()` cancels relays; ending quietly keeps asyncio's stream callback
            # from logging the cancellation as an error.
            pass
        finally:
            self._relays.discard(task)
            for w in (writer, upstream_writer):
                if w is not None:
                    w.close()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, flowing: asyncio.Event) -> None:
    """Copy until EOF, then close the other side (so a dying broker looks like one to the client)."""
    try:
        while data := await reader.read(65536):
            await flowing.wait()
            writer.write(data)
            await writer.drain()
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            writer.close()
