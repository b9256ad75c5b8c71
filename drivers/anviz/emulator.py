"""Simulated Anviz terminals speaking the device side, over a pseudo-terminal or TCP.

`EmulatedTerminal` is one device: its records with their new-record flags, the 0x40 batch
cursor, its clock, and fault injection. `PtyBus` puts several of them on one pseudo-terminal,
like terminals hanging on one RS485 line (each answers only frames carrying its device id);
`TcpServer` serves them on a loopback TCP port, with real-time pushes and heartbeats.
Both run in a background thread so that tests and `punchgate emulate anviz` can use them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import select
import socket
import threading
import tty
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from punchgate.drivers.anviz import codec
from punchgate.drivers.anviz.codec import FrameDecoder, Garbage, Record, Request, Response

log = structlog.get_logger(__name__)

# Noise with a start byte in it, so that resynchronisation is exercised, not just skipping.
NOISE = bytes.fromhex("00ff13a5000000")


@dataclass(slots=True)
class Faults:
    """What goes wrong. `*_every = n` hits every n-th reply (or request); 0 turns it off."""

    silent: bool = False  # answer nothing at all: unplugged, powered off, wrong device id
    crc_error_every: int = 0  # send the reply with a broken CRC
    noise_every: int = 0  # send line noise before the reply
    bad_length_every: int = 0  # send the reply with a LEN field that does not match its data
    drop_every: int = 0  # ignore the request, as if it was lost on the line
    # carry out the next request with one of these commands, then lose its reply on the line
    lose_reply_to: set[int] = field(default_factory=set)
    replies: int = 0  # counters that the `*_every` settings count against
    requests: int = 0


def _hits(every: int, count: int) -> bool:
    return every > 0 and count % every == 0


@dataclass(slots=True)
class _Download:
    selection: list[int] = field(default_factory=list)  # indexes into records, snapshot at start
    cursor: int = 0
    last_batch: list[int] = field(default_factory=list)


class EmulatedTerminal:
    """One Anviz terminal's state and its answers to commands. Thread-safe."""

    def __init__(
        self,
        device_id: int,
        *,
        serial_number: str = "",
        model: str = "TC400",
        firmware: str = "03.26.93",
        record_capacity: int = 50_000,
        user_capacity: int = 1_000,
        epoch: dt.datetime = codec.DEFAULT_EPOCH,
        faults: Faults | None = None,
    ) -> None:
        self.device_id = device_id
        self.serial_number = serial_number or f"AZ{device_id:010d}"
        self.model = model
        self.firmware = firmware
        self.record_capacity = record_capacity
        self.user_capacity = user_capacity
        self.epoch = epoch
        self.faults = faults or Faults()
        self.records: list[Record] = []
        self.new_flags: list[bool] = []
        self.config2 = bytearray([1, 0, 0, 0, 0, 1, 0, 5, 0, 0, 0, 0, 0, 5, 0])
        self.clock_offset = dt.timedelta(0)
        self.requests_seen = 0
        self.pongs = 0  # host answers to our heartbeats
        self.push_listeners: list[Callable[[EmulatedTerminal, bytes], None]] = []
        self._download = _Download()
        self._lock = threading.RLock()

    # ---- state a test or the CLI changes ---------------------------------------------------

    def clock(self) -> dt.datetime:
        return (dt.datetime.now() + self.clock_offset).replace(microsecond=0)

    def reset_clock(self) -> None:
        """The clock battery died: the terminal restarts at its epoch."""
        with self._lock:
            self.clock_offset = self.epoch - dt.datetime.now()

    @property
    def realtime(self) -> bool:
        return self.config2[codec.CONFIG2_REALTIME_INDEX] == 1

    def punch(
        self,
        user_code: int,
        when: dt.datetime | None = None,
        *,
        state: int = 0,
        backup_code: int = 0x01,
        work_code: int = 0,
    ) -> Record | None:
        """Someone verified at the terminal. Returns None when the log is full (not stored)."""
        when = when or self.clock()
        record = Record(user_code, codec.seconds_since_epoch(when, self.epoch), backup_code, state, work_code)
        with self._lock:
            if len(self.records) >= self.record_capacity:
                log.warning("emulator_log_full", device_id=self.device_id, user=user_code)
                return None
            self.records.append(record)
            self.new_flags.append(True)
            listeners = list(self.push_listeners) if self.realtime else []
        push = Response(
            self.device_id, codec.ACK_REALTIME_RECORD, codec.RET_SUCCESS, record.encode()
        ).encode()
        for listener in listeners:
            listener(self, push)
        return record

    def add_history(self, count: int, *, start: dt.datetime | None = None, users: int = 20) -> None:
        """`count` old punches, one a minute from `start`, all still flagged new."""
        start = start or dt.datetime.now().replace(microsecond=0) - dt.timedelta(days=7)
        for i in range(count):
            when = start + dt.timedelta(minutes=i)
            self.punch(
                1000 + i % users, when, state=i % 2, backup_code=(0x01, 0x08, 0x04)[i % 3], work_code=i % 7
            )

    def fill_log(self, leave_free: int = 0) -> None:
        """Fill the log up to its capacity minus `leave_free` (log-full fault)."""
        missing = self.record_capacity - leave_free - len(self.records)
        if missing > 0:
            self.add_history(missing)

    @property
    def new_count(self) -> int:
        with self._lock:
            return sum(self.new_flags)

    # ---- the device side of the protocol --------------------------------------------------

    def handle(self, request: Request) -> list[bytes]:
        """The bytes this terminal puts on the line in answer to `request` (often one frame)."""
        if request.device_id not in (self.device_id, codec.BROADCAST_ID):
            return []
        with self._lock:
            self.requests_seen += 1
            faults = self.faults
            faults.requests += 1
            if faults.silent or _hits(faults.drop_every, faults.requests):
                return []
            ret, data = self._answer(request)
            if request.command in faults.lose_reply_to:
                faults.lose_reply_to.discard(request.command)
                return []
            faults.replies += 1
            reply = Response(self.device_id, request.command | 0x80, ret, data).encode()
            if _hits(faults.crc_error_every, faults.replies):
                reply = reply[:-2] + bytes([reply[-2] ^ 0x5A, reply[-1]])
            if _hits(faults.bad_length_every, faults.replies):
                length = int.from_bytes(reply[7:9], "big") + 3
                reply = reply[:7] + length.to_bytes(2, "big") + reply[9:]
            if _hits(faults.noise_every, faults.replies):
                return [NOISE + reply]
            return [reply]

    def _answer(self, request: Request) -> tuple[int, bytes]:
        handler = _HANDLERS.get(request.command)
        if handler is None:
            return codec.RET_FAILED, b""
        try:
            return codec.RET_SUCCESS, handler(self, request.data)
        except (codec.CodecError, ValueError, IndexError) as exc:
            log.info("emulator_refused", device_id=self.device_id, command=request.command, error=str(exc))
            return codec.RET_FAILED, b""

    def _serial(self, data: bytes) -> bytes:
        return codec.encode_text(self.serial_number, 16)

    def _config1(self, data: bytes) -> bytes:
        return codec.encode_config1(self.firmware)

    def _get_config2(self, data: bytes) -> bytes:
        return bytes(self.config2)

    def _set_config2(self, data: bytes) -> bytes:
        _exact(data, codec.CONFIG2_SIZE)
        for i, value in enumerate(data):
            if value != 0xFF:  # 0xFF leaves a setting unchanged
                self.config2[i] = value
        return b""

    def _get_time(self, data: bytes) -> bytes:
        return codec.encode_clock(self.clock())

    def _set_time(self, data: bytes) -> bytes:
        _exact(data, 6)
        self.clock_offset = codec.decode_clock(data) - dt.datetime.now().replace(microsecond=0)
        return b""

    def _record_info(self, data: bytes) -> bytes:
        users = len({r.user_code for r in self.records})
        info = codec.RecordInfo(users, users, 0, 0, len(self.records), sum(self.new_flags))
        return info.encode()

    def _capacity(self, data: bytes) -> bytes:
        return codec.Capacity(self.user_capacity, self.user_capacity * 2, self.record_capacity).encode()

    def _device_id(self, data: bytes) -> bytes:
        return self.device_id.to_bytes(4, "big")

    def _model(self, data: bytes) -> bytes:
        return codec.encode_text(self.model, 8)

    def _download_records(self, data: bytes) -> bytes:
        _exact(data, 2)
        mode, wanted = data[0], min(data[1], codec.MAX_RECORDS_PER_PACKET)
        state = self._download
        if mode == codec.DOWNLOAD_ALL_FROM_START:
            self._download = state = _Download(selection=list(range(len(self.records))))
        elif mode == codec.DOWNLOAD_NEW_FROM_START:
            self._download = state = _Download(selection=[i for i, new in enumerate(self.new_flags) if new])
        elif mode == codec.DOWNLOAD_CONTINUE:
            pass
        elif mode == codec.DOWNLOAD_RESEND_LAST:
            return codec.encode_records([self.records[i] for i in state.last_batch])
        else:
            raise ValueError(f"unknown download mode {mode}")
        batch = state.selection[state.cursor : state.cursor + wanted]
        state.cursor += len(batch)
        state.last_batch = batch
        return codec.encode_records([self.records[i] for i in batch])

    def _clear(self, data: bytes) -> bytes:
        _exact(data, 4)
        kind, count = data[0], int.from_bytes(data[1:4], "big")
        if kind == codec.CLEAR_DELETE_ALL:
            done = len(self.records)
            self.records.clear()
            self.new_flags.clear()
        elif kind == codec.CLEAR_NEW_FLAG_ALL:
            done = sum(self.new_flags)
            self.new_flags = [False] * len(self.records)
        elif kind == codec.CLEAR_NEW_FLAG_COUNT:
            done = 0
            for i, new in enumerate(self.new_flags):
                if done == count:
                    break
                if new:  # oldest first
                    self.new_flags[i] = False
                    done += 1
        else:
            raise ValueError(f"unknown clear type {kind}")
        self._download = _Download()
        return done.to_bytes(3, "big")


def _exact(data: bytes, size: int) -> None:
    if len(data) != size:
        raise ValueError(f"expected {size} data bytes, got {len(data)}")


_HANDLERS: dict[int, Callable[[EmulatedTerminal, bytes], bytes]] = {
    codec.CMD_GET_SERIAL: EmulatedTerminal._serial,
    codec.CMD_GET_CONFIG1: EmulatedTerminal._config1,
    codec.CMD_GET_CONFIG2: EmulatedTerminal._get_config2,
    codec.CMD_SET_CONFIG2: EmulatedTerminal._set_config2,
    codec.CMD_GET_TIME: EmulatedTerminal._get_time,
    codec.CMD_SET_TIME: EmulatedTerminal._set_time,
    codec.CMD_GET_RECORD_INFO: EmulatedTerminal._record_info,
    codec.CMD_DOWNLOAD_RECORDS: EmulatedTerminal._download_records,
    codec.CMD_GET_DEVICE_ID: EmulatedTerminal._device_id,
    codec.CMD_GET_MODEL: EmulatedTerminal._model,
    codec.CMD_CLEAR_RECORDS: EmulatedTerminal._clear,
    codec.CMD_GET_CAPACITY: EmulatedTerminal._capacity,
}


def _answers(terminals: list[EmulatedTerminal], item: Request | Response | Garbage, where: str) -> bytes:
    if isinstance(item, Garbage):
        log.info("emulator_garbage", where=where, reason=item.reason, raw=item.raw.hex())
        return b""
    if isinstance(item, Response):
        for terminal in terminals:
            if item.ack == codec.ACK_PONG and item.device_id == terminal.device_id:
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
        self._broadcast(Request(terminal.device_id, codec.CMD_HEARTBEAT).encode())

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
