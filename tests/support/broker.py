"""A real mosquitto broker for tests and benchmarks, on a free loopback port.

    broker = Broker(tmp_path)            # plain TCP, anonymous
    broker.start(); ...; broker.kill(); broker.start()   # restart on the same port
    broker.stop()

The launcher itself is product code (`punchgate.gateway.mosquitto.MosquittoBroker`, which the
demo uses too); this module adds what only tests need. Optional password file
(`users={"name": "password"}`), TLS (`tls=BrokerTls(...)`; see `make_test_pki`) and
persistence (`persistent=True`). The process is started and stopped by pid: `stop()` is a
clean shutdown (SIGTERM, persistent state saved), `kill()` a crash (SIGKILL); both are
idempotent, and the pytest fixtures in tests/conftest.py always stop every broker they made.

`Gate` is a small TCP relay in front of the broker that a test can close to hold one client
off (e.g. keep the gateway away until a subscriber has resubscribed after a broker restart).
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from dataclasses import dataclass
from pathlib import Path

from punchgate.gateway.mosquitto import BrokerTls, MosquittoBroker, free_port

LOOPBACK = "127.0.0.1"
__all__ = ["LOOPBACK", "Broker", "BrokerPki", "BrokerTls", "Gate", "free_port", "make_test_pki"]


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


# The broker itself is product code (the demo starts one too).
Broker = MosquittoBroker


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
