"""Writing the gateway's TOML config for a benchmark: one broker, one buffer, N ZK terminals."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from punchgate.gateway.settings import load_settings


@dataclass(frozen=True)
class ZkTarget:
    """One emulated ZK terminal as the gateway's config names it."""

    name: str
    port: int
    transport: str = "tcp"
    host: str = "127.0.0.1"


def write_config(
    path: Path,
    *,
    gateway_id: str,
    broker_port: int,
    buffer: Path,
    terminals: list[ZkTarget],
    poll_interval: float = 60.0,
    live: bool = True,
    terminal_timeout: float = 10.0,
    http_port: int | None = None,
    log_level: str = "info",
    mqtt_extra: str = "",
    buffer_extra: str = "",
) -> Path:
    """Write the config file and validate it with the gateway's own loader before returning."""
    lines = [
        f'gateway_id = "{gateway_id}"',
        'timezone = "UTC"',
        f'log_level = "{log_level}"',
        "shutdown_timeout = 10",
        "",
        "[mqtt]",
        'host = "127.0.0.1"',
        f"port = {broker_port}",
        mqtt_extra,
        "",
        "[buffer]",
        f'path = "{buffer}"',
        "min_free_disk_mb = 0",
        buffer_extra,
        "",
        "[http]",
        f"enabled = {'true' if http_port else 'false'}",
        f"port = {http_port or 9108}",
    ]
    for terminal in terminals:
        lines += [
            "",
            "[[terminals]]",
            'type = "zk"',
            f'name = "{terminal.name}"',
            f'host = "{terminal.host}"',
            f"port = {terminal.port}",
            f'transport = "{terminal.transport}"',
            f"poll_interval = {poll_interval}",
            f"live = {'true' if live else 'false'}",
            f"timeout = {terminal_timeout}",
        ]
    path.write_text("\n".join(lines) + "\n")
    load_settings(path)  # fail here, naming the key, rather than in a child process's log
    return path
