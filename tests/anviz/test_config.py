"""Anviz terminals in the config file: endpoint syntax, device id range, clear messages."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from punchgate.drivers.anviz.config import AnvizTerminal
from punchgate.drivers.anviz.endpoint import SerialEndpoint, TcpEndpoint, parse_endpoint
from punchgate.gateway.settings import ConfigError, settings_from_dict


def _settings(**terminal: Any) -> Any:
    entry = {"type": "anviz", "name": "line-1", "endpoint": "serial:///dev/ttyUSB0", **terminal}
    return settings_from_dict({"gateway_id": "gw", "terminals": [entry]})


def _problems(**terminal: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        _settings(**terminal)
    return info.value.problems


def test_serial_terminal_with_defaults() -> None:
    terminal = _settings(device_id=12, timezone="Europe/Berlin").terminals[0]
    assert isinstance(terminal, AnvizTerminal)
    assert (terminal.device_id, terminal.live, terminal.retries, terminal.epoch) == (
        12,
        True,
        2,
        "2000-01-02",
    )
    assert terminal.clear_log is True  # the worker's switch: mark records read after a commit
    assert parse_endpoint(terminal.endpoint) == SerialEndpoint(port="/dev/ttyUSB0")


def test_endpoint_options_are_kept() -> None:
    url = "serial:///dev/ttyS1?baud=19200&parity=e&rs485=kernel&gap_ms=10&quiet_ms=100"
    terminal = _settings(endpoint=url).terminals[0]
    assert parse_endpoint(terminal.endpoint) == SerialEndpoint(
        port="/dev/ttyS1", baud=19200, parity="E", rs485="kernel", gap_ms=10, quiet_ms=100
    )


def test_tcp_endpoints() -> None:
    assert parse_endpoint("tcp://192.0.2.7") == TcpEndpoint(host="192.0.2.7", port=5010)
    assert parse_endpoint("tcp://[::1]:6000") == TcpEndpoint(host="::1", port=6000)
    assert _settings(endpoint="tcp://clock-3.local:5010").terminals[0].endpoint == "tcp://clock-3.local:5010"


@pytest.mark.parametrize(
    ("endpoint", "message"),
    [
        ("/dev/ttyUSB0", "expected serial:///dev/ttyUSB0"),
        ("serial://dev/ttyUSB0", "absolute device path"),
        ("serial:///dev/ttyUSB0?baud=9601", "baud must be one of"),
        ("serial:///dev/ttyUSB0?parity=X", "parity must be N, E or O"),
        ("serial:///dev/ttyUSB0?speed=9600", "unknown option(s) speed"),
        ("serial:///dev/ttyUSB0?rs485=auto", "rs485 must be none, kernel or rts"),
        ("tcp://", "missing host"),
        ("tcp://host:99999", "port must be a number"),
        ("tcp://host:5010/x", "takes only host and port"),
    ],
)
def test_malformed_endpoints_are_named(endpoint: str, message: str) -> None:
    problems = _problems(endpoint=endpoint)
    assert len(problems) == 1
    assert problems[0].startswith("terminals[0].endpoint: ")
    assert message in problems[0]


def test_device_id_range_and_unknown_keys() -> None:
    assert _problems(device_id=0) == ["terminals[0].device_id: must be >= 1"]
    assert _problems(device_id=2**32) == ["terminals[0].device_id: must be <= 4294967295"]
    assert _problems(host="10.0.0.1") == [
        'terminals[0].host: unknown key; an Anviz terminal takes `endpoint` = "tcp://host:5010" '
        'or "serial:///dev/ttyUSB0"'
    ]
    assert _problems(endpoint=None)[0].startswith("terminals[0].endpoint")


def test_zk_and_anviz_terminals_live_side_by_side() -> None:
    settings = settings_from_dict(
        {
            "gateway_id": "gw",
            "terminals": [
                {"type": "zk", "name": "door", "host": "127.0.0.1"},
                {"type": "anviz", "name": "line", "endpoint": "tcp://127.0.0.1"},
            ],
        }
    )
    assert [t.type for t in settings.terminals] == ["zk", "anviz"]


def test_serial_devices_the_tests_and_sites_use_are_accepted(tmp_path: Path) -> None:
    controller, line = os.openpty()
    try:
        pty = os.ttyname(line)  # /dev/pts/N, as PtyBus and the demo hand out
        link = tmp_path / "ttyV0"  # a socat-style link to it
        link.symlink_to(pty)
        for device in (
            pty,
            str(link),
            "/dev/ttyUSB0",
            "/dev/ttyS1",
            "/dev/serial/by-id/usb-FTDI-if00",
            "/dev/rfcomm0",
        ):
            assert _settings(endpoint=f"serial://{device}").terminals[0].endpoint == f"serial://{device}"
    finally:
        os.close(controller)
        os.close(line)


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ("/dev/sda", "/dev/sda is a disk, not a serial port"),
        ("/dev/nvme0n1", "/dev/nvme0n1 is a disk, not a serial port"),
        ("/dev/loop0", "/dev/loop0 is a disk, not a serial port"),
        ("/dev/null", "/dev/null is not a serial port"),
        ("/dev/zero", "/dev/zero is not a serial port"),
        ("/dev/mem", "/dev/mem is not a serial port"),
        ("/dev/disk/by-id/ata-X", "/dev/disk/by-id/ata-X is not a serial port"),
    ],
)
def test_devices_that_are_never_a_serial_line(device: str, message: str) -> None:
    problems = _problems(endpoint=f"serial://{device}")
    assert problems == [
        f"terminals[0].endpoint: endpoint 'serial://{device}': {message}: use the serial adapter's device, "
        + (
            "e.g. /dev/ttyUSB0 or /dev/serial/by-id/..."
            if "disk," in message
            else "e.g. /dev/ttyUSB0 or /dev/ttyS0"
        )
    ]


def test_existing_paths_that_are_not_devices(tmp_path: Path) -> None:
    regular = tmp_path / "capture.bin"
    regular.write_bytes(b"")
    assert _problems(endpoint=f"serial://{tmp_path}") == [
        f"terminals[0].endpoint: endpoint 'serial://{tmp_path}': {tmp_path} is a directory, not a serial "
        "port: use the serial adapter's device, e.g. /dev/ttyUSB0"
    ]
    assert _problems(endpoint=f"serial://{regular}") == [
        f"terminals[0].endpoint: endpoint 'serial://{regular}': {regular} is not a device, not a serial "
        "port: use the serial adapter's device, e.g. /dev/ttyUSB0"
    ]


def test_serial_line_claims_follow_links(tmp_path: Path) -> None:
    # Two names for one line are one line: the driver keys its buses by the real path too.
    link = tmp_path / "bus"
    link.symlink_to("/dev/ttyS0")
    with pytest.raises(ConfigError) as info:
        settings_from_dict(
            {
                "gateway_id": "gw",
                "terminals": [
                    {"type": "anviz", "name": "a", "endpoint": "serial:///dev/ttyS0"},
                    {"type": "anviz", "name": "b", "endpoint": f"serial://{link}"},
                ],
            }
        )
    assert info.value.problems[0].startswith(
        f"terminals[1].device_id: device_id 1 on serial line {link} is also"
    )
