"""The config file as a file: syntax and encoding errors with line and column, hostile input
that must not crash, and what `load_settings` checks on this machine (TLS files, terminals).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from punchgate.gateway.settings import NO_TERMINALS, ConfigError, load_settings, settings_from_dict

REPO = Path(__file__).resolve().parents[2]
VALID = 'gateway_id = "gw"\n[[terminals]]\ntype = "zk"\nname = "t1"\nhost = "192.0.2.1"\n'
NESTED = (
    "(file): nested too deeply (arrays or tables inside each other hundreds of levels deep); "
    "no punchgate key nests more than four levels: is this the right file?"
)


def _load(tmp_path: Path, content: str | bytes, **options: bool) -> list[str]:
    path = tmp_path / "punchgate.toml"
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, **options)
    return caught.value.problems


@pytest.mark.parametrize(
    "text",
    ["a = " + "[" * 5000 + "]" * 5000, "a = " + "{b = " * 5000 + "1" + "}" * 5000],
    ids=["arrays", "inline tables"],
)
def test_deep_nesting_is_a_problem_not_a_crash(tmp_path: Path, text: str) -> None:
    assert _load(tmp_path, text) == [NESTED]


def test_deep_nesting_from_code_is_a_problem_too() -> None:
    deep: list[object] = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(ConfigError) as caught:
        settings_from_dict({"gateway_id": "gw", "health": {"work_days": deep}})
    # pydantic stops at the first level that has the wrong type, so this never recurses.
    assert caught.value.problems == [
        "health.work_days[0]: must be 'mon', 'tue', 'wed', 'thu', 'fri', 'sat' or 'sun'"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            'gateway_id = "gw"\n[mqtt]\nhost = 10.0.0.5\n',
            "(file): not valid TOML at line 3, column 12: expected newline or end of document after a "
            'statement (a string missing its quotes? host = "10.0.0.5", not host = 10.0.0.5)',
        ),
        (
            'gateway_id = "gw"\nsite = "Plant A\n',
            "(file): not valid TOML at line 2, column 16: illegal character '\\n' "
            "(a string left open: close its quotes on the same line)",
        ),
        (
            '[[terminals]]\ntype = "zk"\n[terminals]\n',
            "(file): not valid TOML at line 3, column 11: cannot declare ('terminals',) twice (a key or "
            "table is written twice; each terminal goes under its own [[terminals]])",
        ),
        (
            'gateway_id = "gw"\n[mqtt\n',
            "(file): not valid TOML at line 2, column 6: expected ']' at the end of a table declaration",
        ),
    ],
    ids=["unquoted address", "unterminated string", "table twice", "unclosed table"],
)
def test_syntax_errors_name_line_and_column(tmp_path: Path, text: str, expected: str) -> None:
    assert _load(tmp_path, text) == [expected]


def test_non_utf8_names_line_and_column(tmp_path: Path) -> None:
    latin1 = 'gateway_id = "gw"\nsite = "Café Zürich"\n'.encode("latin-1")
    assert _load(tmp_path, latin1) == [
        "(file): not UTF-8 text at line 2, column 12 (byte 0xe9): save the file as UTF-8"
    ]
    # A column counts characters, not bytes: "ü" before the bad byte is one column.
    mixed = 'gateway_id = "gw"\nsite = "Zürich '.encode() + b"\xff" + b'"\n'
    assert _load(tmp_path, mixed) == [
        "(file): not UTF-8 text at line 2, column 16 (byte 0xff): save the file as UTF-8"
    ]


def test_a_byte_order_mark_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + VALID.encode())
    assert load_settings(path).gateway_id == "gw"


def test_not_a_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path / "missing.toml")
    assert caught.value.problems == ["(file): cannot read: No such file or directory"]
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path)
    assert caught.value.problems == ["(file): not a regular file: give the path of the TOML config file"]
    with pytest.raises(ConfigError) as caught:
        load_settings("/dev/zero")  # would otherwise be read forever
    assert caught.value.problems == ["(file): not a regular file: give the path of the TOML config file"]
    huge = "# " + "x" * (1 << 20) + "\n"
    assert _load(tmp_path, huge) == [
        "(file): larger than 1 MB: a punchgate config is a few KB; is this the right file?"
    ]


def _tls_config(tmp_path: Path, **files: str) -> str:
    lines = "".join(f'{key} = "{value}"\n' for key, value in files.items())
    return VALID + "[mqtt.tls]\n" + lines


def test_tls_files_must_exist_and_be_readable(tmp_path: Path) -> None:
    (tmp_path / "empty.pem").write_text("")
    problems = _load(
        tmp_path,
        _tls_config(
            tmp_path,
            ca_file="/nonexistent/ca.pem",
            cert_file=str(tmp_path),
            key_file=str(tmp_path / "empty.pem"),
        ),
    )
    assert problems == [
        "mqtt.tls.ca_file: /nonexistent/ca.pem does not exist: check the path",
        f"mqtt.tls.cert_file: {tmp_path} is a directory: name the file inside it",
        f"mqtt.tls.key_file: {tmp_path / 'empty.pem'} is empty",
    ]
    # Commands that only need the HTTP address may skip looking at the files.
    path = tmp_path / "punchgate.toml"
    assert load_settings(path, check_files=False).mqtt.tls is not None
    relative = _load(tmp_path, _tls_config(tmp_path, ca_file="certs/ca.pem"))
    assert relative == [
        "mqtt.tls.ca_file: certs/ca.pem does not exist: check the path "
        "(a relative path counts from the directory punchgate starts in)"
    ]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_tls_file_without_permission(tmp_path: Path) -> None:
    secret = tmp_path / "client.key"
    secret.write_text("key")
    secret.chmod(0)
    problems = _load(tmp_path, _tls_config(tmp_path, cert_file=str(secret), key_file=str(secret)))
    assert problems[0] == (
        f"mqtt.tls.cert_file: cannot read {secret}: permission denied for uid {os.geteuid()}: "
        "give the user punchgate runs as read access"
    )


def test_tls_files_that_exist_pass(tmp_path: Path) -> None:
    for name in ("ca.pem", "client.pem", "client.key"):
        (tmp_path / name).write_text("-----BEGIN-----\n")
    path = tmp_path / "ok.toml"
    path.write_text(
        _tls_config(
            tmp_path,
            ca_file=str(tmp_path / "ca.pem"),
            cert_file=str(tmp_path / "client.pem"),
            key_file=str(tmp_path / "client.key"),
        )
    )
    tls = load_settings(path).mqtt.tls
    assert tls is not None and tls.ca_file == tmp_path / "ca.pem"


def test_models_do_not_look_at_this_machine() -> None:
    # Built in code (tests, other tools), the TLS paths are taken as they are.
    settings = settings_from_dict({"gateway_id": "gw", "mqtt": {"tls": {"ca_file": "/elsewhere/ca.pem"}}})
    assert settings.mqtt.tls is not None


def test_no_terminals(tmp_path: Path) -> None:
    assert _load(tmp_path, 'gateway_id = "gw"\n', require_terminals=True) == [NO_TERMINALS]
    assert _load(tmp_path, 'gateway_id = "gw"\nterminals = []\n', require_terminals=True) == [NO_TERMINALS]
    # Reported with the file's other problems, not instead of them.
    assert _load(tmp_path, 'gateway_id = "g w"\n', require_terminals=True) == [
        "gateway_id: must be 1-64 letters, digits, '_', '.', '-' and start with a letter or digit",
        NO_TERMINALS,
    ]
    # Without the flag a gateway may run with none (draining its buffer, a test harness).
    path = tmp_path / "drain.toml"
    path.write_text('gateway_id = "gw"\n')
    assert load_settings(path).terminals == []


def test_unreadable_credential_is_a_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mqtt_password").write_bytes(b"\xff\xfe")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    with pytest.raises(ConfigError) as caught:
        settings_from_dict({"gateway_id": "gw"})
    assert caught.value.problems[0].startswith(
        f"mqtt.password: cannot read the systemd credential {creds / 'mqtt_password'}:"
    )


def test_check_config_exits_2_and_names_the_problems(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        'gateway_id = "gw"\n[mqtt]\nhost = "1.2.3.4:1883"\nprotocol = 5\n[mqtt.tls]\nca_file = "/nonexistent/ca.pem"\n'
        '[[terminals]]\ntype = "zk"\nname = "t1"\nhost = "192.0.2.1"\nport = "4370"\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "punchgate.gateway", "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines()[1:] == [
        "  mqtt.host: '1.2.3.4:1883' has a port in it: put the port in `port` and write only '1.2.3.4' here",
        '  mqtt.protocol: write it as a string: "5"',
        "  terminals[0].port: write it as a number: 4370",
    ]
    assert "Traceback" not in result.stderr
