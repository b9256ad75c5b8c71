"""The one owner of a serial port: exchanges on a shared RS232/RS485 line, one at a time.

Several terminals with different device ids share one RS485 line, so every link on the same
port goes through ONE `SerialBus` (a module-level registry keyed by the port's real path)
whose lock serialises exchanges. pyserial blocks, so the bus runs in worker threads; the
async side, one terminal on the bus, is serial_link.py.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time

import serial
import serial.rs485
import structlog

from punchgate.drivers.anviz.endpoint import SerialEndpoint
from punchgate.drivers.anviz.frame_decoder import FrameDecoder
from punchgate.drivers.anviz.frames import Garbage, Request, Response
from punchgate.drivers.anviz.link import AttemptFailed, GarbageTally, expected_ack

log = structlog.get_logger(__name__)

_PARITY = {"N": serial.PARITY_NONE, "E": serial.PARITY_EVEN, "O": serial.PARITY_ODD}
_POLL_SECONDS = 0.01  # pyserial read timeout inside the receive loop
_READ_CHUNK = 4096  # bytes read and decoded at a time, so the deadline is checked often


class SerialBus:
    """The one owner of a serial port. Its lock makes exchanges on the line strictly one at a time.

    The port opens lazily and reopens after an error, so a missing USB adapter at start-up or
    an unplug costs an `unreachable` fault, not the daemon.
    """

    def __init__(self, endpoint: SerialEndpoint) -> None:
        self.endpoint = endpoint
        self.users = 0
        self._lock = threading.Lock()
        self._port: serial.Serial | None = None
        self._last_activity = 0.0

    def _open(self) -> serial.Serial:
        if self._port is not None:
            return self._port
        ep = self.endpoint
        port_class = serial.rs485.RS485 if ep.rs485 == "rts" else serial.Serial
        try:
            port = port_class(port=None, baudrate=ep.baud, parity=_PARITY[ep.parity], bytesize=8, stopbits=1)
            port.port = ep.port
            port.timeout = _POLL_SECONDS
            port.write_timeout = 5.0
            if ep.rs485 != "none":
                # the driver-enable guard times from the Arduino implementation (50 ms each side)
                port.rs485_mode = serial.rs485.RS485Settings(delay_before_tx=0.05, delay_before_rx=0.05)
            port.open()
        except (serial.SerialException, OSError, ValueError) as exc:
            raise AttemptFailed(f"cannot open {ep.port}: {exc}", garbled=False) from exc
        log.info("anviz_serial_opened", port=ep.port, baud=ep.baud, parity=ep.parity, rs485=ep.rs485)
        self._port = port
        return port

    def close(self) -> None:
        with self._lock:
            if self._port is not None:
                with contextlib.suppress(serial.SerialException, OSError):
                    self._port.close()
                self._port = None

    def exchange(self, request: Request, timeout: float, garbage: GarbageTally) -> Response:
        """Blocking: one request, one reply, within `timeout`. Garbage seen on the way goes to `garbage`."""
        with self._lock:
            try:
                return self._exchange_locked(request, timeout, garbage)
            except (serial.SerialException, OSError) as exc:
                # the adapter went away or the pty closed: start from a fresh open next time
                with contextlib.suppress(serial.SerialException, OSError):
                    if self._port is not None:
                        self._port.close()
                self._port = None
                raise AttemptFailed(f"serial error on {self.endpoint.port}: {exc}", garbled=False) from exc
            finally:
                self._last_activity = time.monotonic()

    def _exchange_locked(self, request: Request, timeout: float, garbage: GarbageTally) -> Response:
        port = self._open()
        gap = self.endpoint.gap_ms / 1000
        idle = time.monotonic() - self._last_activity
        if idle < gap:
            time.sleep(gap - idle)
        stale = port.read(port.in_waiting) if port.in_waiting else b""
        if stale:
            # a late reply to an abandoned attempt, or noise: it must not be taken as our answer
            garbage.add(Garbage(stale, "stray bytes before request"))
        port.write(request.encode())
        port.flush()
        return self._receive(port, request, timeout, garbage)

    def _receive(
        self, port: serial.Serial, request: Request, timeout: float, garbage: GarbageTally
    ) -> Response:
        decoder = FrameDecoder()
        quiet = self.endpoint.quiet_ms / 1000
        deadline = time.monotonic() + timeout
        last_byte = time.monotonic()
        broken = False  # garbage came: once the line is quiet, this attempt has failed
        others = False  # frames for someone else came
        while True:
            now = time.monotonic()
            held = decoder.held_noise or decoder.held_frame
            if held and now - last_byte >= quiet:
                # the line went quiet in the middle of something: that reply is not coming
                flushed = decoder.flush()
                if flushed is not None:
                    garbage.add(flushed)
                broken = True
            if broken and not (decoder.held_noise or decoder.held_frame):
                raise AttemptFailed(garbage.last_reason or "garbled reply", garbled=True)
            if now >= deadline:
                raise self._no_reply(timeout, decoder, garbage, garbled=broken or others)
            chunk = port.read(min(max(1, port.in_waiting), _READ_CHUNK))
            if not chunk:
                continue
            last_byte = time.monotonic()
            for item in decoder.feed(chunk):
                if isinstance(item, Garbage):
                    garbage.add(item)
                    broken = True
                elif (
                    isinstance(item, Response)
                    and item.device_id == request.device_id
                    and item.ack == expected_ack(request)
                ):
                    return item
                elif item == request:
                    continue  # our own request: some 2-wire RS485 adapters echo what they send
                else:
                    # another terminal's late reply, or another host's request
                    others = True
                    garbage.add(
                        Garbage(item.raw if isinstance(item, Response) else item.encode(), "unexpected frame")
                    )

    @staticmethod
    def _no_reply(
        timeout: float, decoder: FrameDecoder, garbage: GarbageTally, *, garbled: bool
    ) -> AttemptFailed:
        """Time is up: garbage or other frames that never stopped, or a frame that never ended,
        make the line garbled rather than silent. What the decoder still holds is garbage too."""
        flushed = decoder.flush()
        if flushed is not None:
            garbage.add(flushed)
        detail = f"no reply within {timeout:g}s"
        if garbage.last_reason:
            detail += f", garbage: {garbage.last_reason}"
        return AttemptFailed(detail, garbled=garbled or flushed is not None)


_buses: dict[str, SerialBus] = {}
_buses_lock = threading.Lock()


def acquire_bus(endpoint: SerialEndpoint) -> SerialBus:
    """The shared bus for this port; every terminal on one port must agree on the line settings."""
    key = os.path.realpath(endpoint.port)
    with _buses_lock:
        bus = _buses.get(key)
        if bus is None:
            bus = _buses[key] = SerialBus(endpoint)
        elif bus.endpoint.line_settings() != endpoint.line_settings():
            raise ValueError(
                f"serial port {endpoint.port} is already used with {bus.endpoint.url()}; "
                f"all terminals on one bus need the same baud/parity/rs485 settings"
            )
        bus.users += 1
        return bus


def release_bus(bus: SerialBus) -> None:
    with _buses_lock:
        bus.users -= 1
        if bus.users > 0:
            return
        _buses.pop(os.path.realpath(bus.endpoint.port), None)
    bus.close()
