"""Putting emulated Anviz terminals on a wire: a pseudo-terminal bus and a loopback TCP server.

`PtyBus` puts several terminals on one pseudo-terminal, like terminals hanging on one RS485
line (each answers only frames carrying its device id); `TcpServer` serves them on a loopback
TCP port, with real-time pushes and heartbeats. Both run in background threads so that tests
and `punchgate emulate anviz` can use them; what a terminal answers is emulator_terminal.py.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import threading
import tty
from collections.abc import Callable

import structlog

from punchgate.drivers.anviz.commands import ACK_PONG, CMD_HEARTBEAT
from punchgate.drivers.anviz.emulator_terminal import EmulatedTerminal
from punchgate.drivers.anviz.frame_decoder import FrameDecoder
from punchgate.drivers.anviz.frames import Garbage, Request, Response, hex_preview

log = structlog.get_logger(__name__)


def _answers(terminals: list[EmulatedTerminal], item: Request | Response | Garbage, where: str) -> bytes:
    if isinstance(item, Garbage):
        log.info("emulator_garbage", where=where, reason=item.reason, raw=hex_preview(item.raw))
        return b""
    if isinstance(item, Response):
        for terminal in terminals:
            if item.ack == ACK_PONG and item.device_id == terminal.device_id:
                terminal.pongs += 1
        return b""
    return b"".join(frame for t in terminals for frame in t.handle(item))


class PtyBus:
    """Terminals sharing one serial line, reachable at `path` (a pseudo-terminal)."""

    def __init__(self, terminals: list[EmulatedTerminal], *, echo: bool = False) -> None:
        ids = [t.device_id for t in terminals]
        if len(set(ids)) != len(ids):
            raise ValueError(f"device ids on one bus must differ: {ids}")
        self.terminals = terminals
        self.echo = echo  # like a 2-wire RS485 adapter that hears its own transmission
        self.path = ""
        self._master = self._slave = -1
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> PtyBus:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no newline translation: binary frames pass untouched
        self.path = os.ttyname(self._slave)
        self._thread = threading.Thread(target=self._serve, name=f"anviz-pty-{self.path}", daemon=True)
        self._thread.start()
        log.info("emulator_pty_started", path=self.path, devices=[t.device_id for t in self.terminals])
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for fd in (self._master, self._slave):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = -1

    def __enter__(self) -> PtyBus:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve(self) -> None:
        decoder = FrameDecoder()
        while not self._stop.is_set():
            ready, _, _ = select.select([self._master], [], [], 0.05)
            if not ready:
                flushed = decoder.flush()  # the host went quiet mid-frame
                if flushed is not None:
                    _answers(self.terminals, flushed, self.path)
                continue
            try:
                chunk = os.read(self._master, 4096)
            except OSError:
                continue  # no reader on the other side right now
            if self.echo:
                with contextlib.suppress(OSError):
                    os.write(self._master, chunk)
            for item in decoder.feed(chunk):
                out = _answers(self.terminals, item, self.path)
                if out:
                    with contextlib.suppress(OSError):
                        os.write(self._master, out)


class TcpServer:
    """Terminals served on a loopback TCP port, as Anviz terminals in server mode."""

    def __init__(self, terminals: list[EmulatedTerminal], *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.terminals = terminals
        self._listener = socket.create_server((host, port))
        self.host, self.port = self._listener.getsockname()[:2]
        self._clients: list[tuple[socket.socket, threading.Lock]] = []
        self._clients_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> TcpServer:
        for terminal in self.terminals:
            terminal.push_listeners.append(self._push)
        self._spawn(self._accept_loop, "anviz-tcp-accept")
        log.info("emulator_tcp_started", host=self.host, port=self.port)
        return self

    def stop(self) -> None:
        self._stop.set()
        for terminal in self.terminals:
            with contextlib.suppress(ValueError):
                terminal.push_listeners.remove(self._push)
        self._listener.close()
        self.drop_clients()
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> TcpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def drop_clients(self) -> None:
        """Close every connection, as a terminal reboot would."""
        with self._clients_lock:
            clients, self._clients = self._clients, []
        for sock, _ in clients:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def send_heartbeat(self, terminal: EmulatedTerminal) -> None:
        self._broadcast(Request(terminal.device_id, CMD_HEARTBEAT).encode())

    def _spawn(self, target: Callable[..., None], name: str, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        self._listener.settimeout(0.1)
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client = (sock, threading.Lock())
            with self._clients_lock:
                self._clients.append(client)
            self._spawn(self._serve_client, "anviz-tcp-client", client)

    def _serve_client(self, client: tuple[socket.socket, threading.Lock]) -> None:
        sock, write_lock = client
        decoder = FrameDecoder()
        sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                break
            if not chunk:
                break
            for item in decoder.feed(chunk):
                out = _answers(self.terminals, item, f"tcp:{self.port}")
                if out:
                    with write_lock, contextlib.suppress(OSError):
                        sock.sendall(out)
        with self._clients_lock:
            if client in self._clients:
                self._clients.remove(client)
        sock.close()

    def _push(self, terminal: EmulatedTerminal, frame: bytes) -> None:
        if not terminal.faults.silent:
            self._broadcast(frame)

    def _broadcast(self, frame: bytes) -> None:
        with self._clients_lock:
            clients = list(self._clients)
        for sock, write_lock in clients:
            with write_lock, contextlib.suppress(OSError):
                sock.sendall(frame)
