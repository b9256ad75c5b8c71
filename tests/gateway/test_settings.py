"""Config validation: accepted and rejected files, with the exact messages operators see."""

from __future__ import annotations

from pathlib import Path

import pytest

from punchgate.drivers.zk.config import ZkTerminal
from punchgate.gateway.settings import ConfigError, load_settings, settings_from_dict

REPO = Path(__file__).resolve().parents[2]
MINIMAL = {"gateway_id": "gw1", "terminals": [{"type": "zk", "name": "t1", "host": "127.0.0.1"}]}


def problems(data: dict[str, object]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        settings_from_dict(data)
    return caught.value.problems


def test_example_config_is_valid() -> None:
    settings = load_settings(REPO / "config" / "punchgate.example.toml")
    assert settings.gateway_id == "plant-a-gw1"
    assert [t.name for t in settings.terminals] == ["gate-north", "canteen", "assembly-1", "assembly-2"]
    assert settings.http.bind == "127.0.0.1"


def test_defaults_fill_in() -> None:
    settings = settings_from_dict(MINIMAL)
    terminal = settings.terminals[0]
    assert isinstance(terminal, ZkTerminal)  # the composed model is a subclass of the driver's
    assert terminal.port == 4370 and terminal.transport == "tcp" and terminal.live
    assert settings.mqtt.topic_prefix == "punchgate"
    assert settings.terminal_timezone(terminal) == "UTC"


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        (
            {
                "terminals": [{"type": "zk", "name": "a", "host": "h"}] * 2
                + [{"type": "zk", "name": "c", "host": "h", "port": 70000}]
            },
            "terminals[2].port: must be 1..65535",
        ),
        ({"timezone": "Mars/Olympus"}, "timezone: unknown IANA timezone 'Mars/Olympus'"),
        ({"mqtt": {"hots": "x"}}, "mqtt.hots: unknown key"),
        ({"terminals": [{"type": "zk", "name": "t1"}]}, "terminals[0].host: required"),
        ({"terminals": [{"type": "nope", "name": "t1"}]}, "terminals[0]: unknown terminal type 'nope'"),
        ({"terminals": [{"name": "t1", "host": "h"}]}, "terminals[0]: missing 'type' (e.g. type = \"zk\")"),
        (
            {"terminals": [{"type": "zk", "name": "t1", "host": "h", "comm_key": "abc"}]},
            "terminals[0].comm_key: must be a number (0..4294967295)",
        ),
        (
            {"terminals": [{"type": "zk", "name": "t1", "host": "h", "encoding": "klingon"}]},
            "terminals[0].encoding: unknown text encoding 'klingon'",
        ),
        (
            {"terminals": [{"type": "zk", "name": "t1", "host": "h", "timezone": "Nowhere/Land"}]},
            "terminals[0].timezone: unknown IANA timezone 'Nowhere/Land'",
        ),
        (
            {"terminals": [{"type": "zk", "name": "bad name", "host": "h"}]},
            "terminals[0].name: must be 1-64 letters, digits, '_', '.', '-' and start with a letter or digit",
        ),
        (
            {"mqtt": {"tls": {"cert_file": "/c.pem"}}},
            "mqtt.tls: cert_file and key_file must be given together",
        ),
        (
            {"mqtt": {"topic_prefix": "a/#"}},
            "mqtt.topic_prefix: must be a non-empty topic without wildcards or leading/trailing '/'",
        ),
        ({"buffer": {"max_pending": 0}}, "buffer.max_pending: must be >= 1"),
        (
            {
                "terminals": [
                    {"type": "zk", "name": "t1", "host": "h"},
                    {"type": "zk", "name": "t1", "host": "h"},
                ]
            },
            "terminals[1].name: 't1' is used twice (also terminals[0]): give every terminal its own name",
        ),
    ],
)
def test_rejected_with_key_path(patch: dict[str, object], expected: str) -> None:
    data = {**MINIMAL, **patch}
    found = problems(data)
    assert any(p.startswith(expected) for p in found), found


def test_every_error_is_reported_at_once() -> None:
    data = {
        "gateway_id": "gw1",
        "bogus": 1,
        "terminals": [{"type": "zk", "name": "t1", "host": "h", "port": 0, "poll_interval": 0}],
    }
    found = problems(data)
    assert "bogus: unknown key" in found
    assert "terminals[0].port: must be 1..65535" in found
    assert "terminals[0].poll_interval: must be >= 1" in found


def test_bad_toml_names_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("gateway_id = \n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert caught.value.problems == [
        "(file): not valid TOML at line 1, column 14: invalid value "
        '(strings need quotes, host = "192.0.2.10"; numbers and true/false do not)'
    ]


def test_secrets_from_environment_and_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUNCHGATE_MQTT_PASSWORD", "from-env")
    monkeypatch.setenv("PUNCHGATE_COMM_KEY_GATE_1", "4242")
    data = {"gateway_id": "gw1", "terminals": [{"type": "zk", "name": "gate-1", "host": "h"}]}
    settings = settings_from_dict(data)
    assert settings.mqtt.password is not None and settings.mqtt.password.get_secret_value() == "from-env"
    terminal = settings.terminals[0]
    assert isinstance(terminal, ZkTerminal)
    key = terminal.comm_key
    assert key is not None and key.get_secret_value() == "4242"

    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mqtt_password").write_text("from-credential\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    settings = settings_from_dict(data)
    assert settings.mqtt.password is not None
    assert settings.mqtt.password.get_secret_value() == "from-credential"
    # Secrets never show in the model's repr (which is what ends up in tracebacks).
    assert "from-credential" not in repr(settings)


def test_configuration_doc_is_current() -> None:
    from punchgate.gateway.config_doc import render

    checked_in = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert checked_in == render(), (
        "docs/configuration.md is stale: run python -m punchgate.gateway.config_doc"
    )
