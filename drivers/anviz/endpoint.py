"""Where an Anviz terminal is: `serial:///dev/ttyUSB0?baud=9600&parity=N` or `tcp://host:5010`.

Pure parsing with clear messages, shared by the config model, the driver and the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import SplitResult, parse_qsl, urlsplit

DEFAULT_TCP_PORT = 5010
DEFAULT_BAUD = 9600
BAUD_RATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
Parity = Literal["N", "E", "O"]
Rs485Mode = Literal["none", "kernel", "rts"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SerialEndpoint:
    """A serial line: RS232 point-to-point or an RS485 bus shared by several terminals."""

    port: str
    baud: int = DEFAULT_BAUD
    parity: Parity = "N"
    # none: RS232, or an RS485 adapter that switches direction by itself (most USB dongles);
    # kernel: the UART driver toggles RTS (pyserial rs485_mode); rts: pyserial toggles RTS.
    rs485: Rs485Mode = "none"
    gap_ms: int = 50  # quiet time on the bus between one exchange and the next request
    quiet_ms: int = 300  # silence that ends a broken reply (the Arduino code's 300 ms rule)

    def line_settings(self) -> tuple[int, str, str]:
        return (self.baud, self.parity, self.rs485)

    def url(self) -> str:
        return f"serial://{self.port}?baud={self.baud}&parity={self.parity}"


@dataclass(frozen=True, slots=True, kw_only=True)
class TcpEndpoint:
    host: str
    port: int = DEFAULT_TCP_PORT

    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"


Endpoint = SerialEndpoint | TcpEndpoint

_SERIAL_OPTIONS = ("baud", "parity", "rs485", "gap_ms", "quiet_ms")


def parse_endpoint(url: str) -> Endpoint:
    """Parse an endpoint URL; raises ValueError saying what is wrong and what is expected."""
    parts = urlsplit(url.strip())
    if parts.scheme == "tcp":
        return _parse_tcp(url, parts)
    if parts.scheme == "serial":
        return _parse_serial(url, parts.netloc, parts.path, parts.query)
    raise ValueError(
        f"endpoint {url!r}: expected serial:///dev/ttyUSB0?baud=9600&parity=N or tcp://host:5010"
    )


def _parse_tcp(url: str, parts: SplitResult) -> TcpEndpoint:
    if not parts.hostname:
        raise ValueError(f"endpoint {url!r}: missing host (expected tcp://host:5010)")
    try:
        port = parts.port or DEFAULT_TCP_PORT
    except ValueError:
        raise ValueError(f"endpoint {url!r}: port must be a number 1..65535") from None
    if parts.path not in ("", "/") or parts.query:
        raise ValueError(f"endpoint {url!r}: a tcp endpoint takes only host and port")
    return TcpEndpoint(host=parts.hostname, port=port)


def _parse_serial(url: str, netloc: str, path: str, query: str) -> SerialEndpoint:
    if netloc or not path.startswith("/") or path == "/":
        raise ValueError(f"endpoint {url!r}: expected an absolute device path, e.g. serial:///dev/ttyUSB0")
    options = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=False))
    unknown = sorted(set(options) - set(_SERIAL_OPTIONS))
    if unknown:
        raise ValueError(
            f"endpoint {url!r}: unknown option(s) {', '.join(unknown)} (known: {_SERIAL_OPTIONS})"
        )
    baud = _int_option(url, options, "baud", DEFAULT_BAUD)
    if baud not in BAUD_RATES:
        raise ValueError(f"endpoint {url!r}: baud must be one of {', '.join(map(str, BAUD_RATES))}")
    parity = options.get("parity", "N").upper()
    if parity not in ("N", "E", "O"):
        raise ValueError(f"endpoint {url!r}: parity must be N, E or O")
    rs485 = options.get("rs485", "none").lower()
    if rs485 not in ("none", "kernel", "rts"):
        raise ValueError(f"endpoint {url!r}: rs485 must be none, kernel or rts")
    gap_ms = _int_option(url, options, "gap_ms", 50)
    quiet_ms = _int_option(url, options, "quiet_ms", 300)
    if not 0 <= gap_ms <= 10_000 or not 1 <= quiet_ms <= 10_000:
        raise ValueError(f"endpoint {url!r}: gap_ms must be 0..10000 and quiet_ms 1..10000")
    return SerialEndpoint(
        port=path,
        baud=baud,
        parity=parity,  # type: ignore[arg-type]  # checked just above
        rs485=rs485,  # type: ignore[arg-type]
        gap_ms=gap_ms,
        quiet_ms=quiet_ms,
    )


def _int_option(url: str, options: dict[str, str], key: str, default: int) -> int:
    value = options.get(key)
    if value is None:
        return default
    if not value.isdigit():
        raise ValueError(f"endpoint {url!r}: {key} must be a whole number, not {value!r}")
    return int(value)
