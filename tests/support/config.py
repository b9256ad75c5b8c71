"""The gateway's TOML config file for a test or a benchmark, written with tomli-w.

    path = write_config(
        tmp_path / "gateway.toml",
        gateway_id="gw-test",
        broker_port=broker.port,
        buffer_path=tmp_path / "buffer.db",
        terminals=[zk_terminal("t1", emulator, poll_interval=2)],
        mqtt={"reconnect_max": 1.0},
        sections={"health": {"fault_hold_seconds": 20}},
        timezone="UTC",                       # any other top-level key
    )

Values are plain Python (str, int, float, bool, datetime.time, lists, dicts); a nested dict
in a terminal becomes its own table (`[terminals.health]`). Loopback is the broker host, the
HTTP API is off unless `http_port` is given, and the buffer's free-disk guard is off
(`min_free_disk_mb = 0`, so a nearly full test disk does not fail unrelated tests); any of
these can be overridden. The file is checked with the gateway's own loader before returning,
so a mistake fails here, naming the key, rather than in a child process's log.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import tomli_w

from punchgate.drivers.zk.emulator import ZkEmulator
from punchgate.gateway.mosquitto import LOOPBACK
from punchgate.gateway.settings import load_settings


def gateway_config(
    *,
    gateway_id: str,
    broker_port: int,
    buffer_path: Path,
    terminals: Sequence[Mapping[str, Any]] = (),
    http_port: int | None = None,
    mqtt: Mapping[str, Any] | None = None,
    buffer: Mapping[str, Any] | None = None,
    sections: Mapping[str, Mapping[str, Any]] | None = None,
    **top: Any,
) -> dict[str, Any]:
    """The config as a dict, ready for `tomli_w` (see the module docstring for the defaults)."""
    config: dict[str, Any] = {"gateway_id": gateway_id, **top}
    config["mqtt"] = {"host": LOOPBACK, "port": broker_port, **(mqtt or {})}
    config["buffer"] = {"path": str(buffer_path), "min_free_disk_mb": 0, **(buffer or {})}
    config["http"] = {"enabled": True, "port": http_port} if http_port else {"enabled": False}
    for name, section in (sections or {}).items():
        config[name] = dict(section)
    if terminals:
        config["terminals"] = [dict(terminal) for terminal in terminals]
    return config


def write_config(path: Path, *, validate: bool = True, **options: Any) -> Path:
    """Write `gateway_config(**options)` to `path` and (unless told not to) load it back."""
    path.write_text(tomli_w.dumps(gateway_config(**options)))
    if validate:
        load_settings(path)
    return path


def zk_terminal(
    name: str,
    target: ZkEmulator | int,
    *,
    transport: Literal["tcp", "udp"] = "tcp",
    host: str = LOOPBACK,
    **options: Any,
) -> dict[str, Any]:
    """A `[[terminals]]` entry for a ZK terminal: an emulator (its port for `transport`) or a port."""
    if isinstance(target, ZkEmulator):
        port = target.udp_port if transport == "udp" else target.tcp_port
        if port is None:
            raise ValueError(f"emulator {target.serial_number} does not serve {transport}")
    else:
        port = target
    return {"type": "zk", "name": name, "host": host, "port": port, "transport": transport, **options}
