"""The config writer: what it writes is what the gateway's own loader reads."""

from __future__ import annotations

import datetime as dt
import tomllib
from pathlib import Path

import pytest

from punchgate.gateway.settings import ConfigError, load_settings
from tests.support.config import write_config, zk_terminal


def test_written_config_loads_with_defaults_and_overrides(tmp_path: Path) -> None:
    silent = {"silent_hours": 0.5, "work_start": dt.time(0, 0), "work_end": dt.time(0, 0)}
    path = write_config(
        tmp_path / "gw.toml",
        gateway_id="gw-x",
        broker_port=1883,
        buffer_path=tmp_path / "buffer.db",
        terminals=[
            zk_terminal("a", 4370, poll_interval=5, live=False),
            {**zk_terminal("b", 4371, transport="udp"), "health": silent},
        ],
        mqtt={"reconnect_max": 1.0},
        sections={"health": {"broker_grace_seconds": 2}},
        timezone="Europe/Berlin",
    )
    settings = load_settings(path)
    assert (settings.gateway_id, settings.timezone) == ("gw-x", "Europe/Berlin")
    assert (settings.mqtt.host, settings.mqtt.port, settings.mqtt.reconnect_max) == ("127.0.0.1", 1883, 1.0)
    assert settings.buffer.min_free_disk_mb == 0
    assert not settings.http.enabled
    assert settings.health.broker_grace_seconds == 2
    assert [t.name for t in settings.terminals] == ["a", "b"]
    assert tomllib.loads(path.read_text())["terminals"][1]["health"]["work_start"] == dt.time(0, 0)


def test_http_port_turns_the_api_on(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "gw.toml",
        gateway_id="gw-x",
        broker_port=1883,
        buffer_path=tmp_path / "b.db",
        http_port=9200,
    )
    http = load_settings(path).http
    assert http.enabled and http.port == 9200


def test_a_mistake_fails_at_writing_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"mqtt\.reconect_max"):
        write_config(
            tmp_path / "gw.toml",
            gateway_id="gw-x",
            broker_port=1883,
            buffer_path=tmp_path / "b.db",
            mqtt={"reconect_max": 1.0},
        )
