"""The punchgate command's exit codes and messages, run as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from punchgate.drivers.registry import DRIVERS
from tests.support.broker import free_port

REPO = Path(__file__).resolve().parents[2]


def punchgate(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "punchgate.gateway", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=REPO,
    )


def test_help_lists_commands() -> None:
    result = punchgate("--help")
    assert result.returncode == 0
    for command in ("run", "check-config", "emulate", "probe", "status", "demo"):
        assert command in result.stdout


def test_check_config_ok_prints_summary() -> None:
    result = punchgate("check-config", str(REPO / "config" / "punchgate.example.toml"))
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout and "4 terminals (2 anviz, 2 zk)" in result.stdout


def test_check_config_bad_exits_2_with_key_paths(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        'gateway_id = "gw"\n'
        "[[terminals]]\ntype='zk'\nname='a'\nhost='h'\n"
        "[[terminals]]\ntype='zk'\nname='b'\nhost='h'\n"
        "[[terminals]]\ntype='zk'\nname='c'\nhost='h'\nport=99999\ncolour='red'\n"
    )
    result = punchgate("check-config", str(path))
    assert result.returncode == 2
    assert "terminals[2].port: must be 1..65535" in result.stderr
    assert "terminals[2].colour: unknown key" in result.stderr
    assert result.stdout == ""


def test_run_with_bad_config_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("gateway_id = 'has space'\n")
    result = punchgate("run", "--config", str(path))
    assert result.returncode == 2
    assert "gateway_id:" in result.stderr


def test_missing_file_exits_2() -> None:
    result = punchgate("check-config", "/nonexistent/punchgate.toml")
    assert result.returncode == 2
    assert "cannot read" in result.stderr


def test_unknown_probe_scheme_is_a_usage_error() -> None:
    result = punchgate("probe", "ftp://127.0.0.1:21")
    assert result.returncode == 2
    assert "unknown terminal type 'ftp'" in result.stderr


@pytest.mark.parametrize("command", ["probe", "emulate"])
@pytest.mark.parametrize("option", ["--help", "-h"])
def test_probe_and_emulate_help_list_the_families(command: str, option: str) -> None:
    """Was: "expected a URL" / "unknown terminal type '--help'" (exit 2)."""
    result = punchgate(command, option)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: ") and result.stderr == ""
    assert "Terminal families (KIND):" in result.stdout
    for description in DRIVERS:  # every family the registry knows with this command, with its summary
        if (description.probe_command if command == "probe" else description.emulate_command) is None:
            continue  # e.g. zk-push: nothing to probe, the gateway is what it connects to
        assert description.type_name in result.stdout
        assert description.summary.split(",")[0] in result.stdout
    assert f"punchgate {command} KIND --help" in result.stdout


def test_a_familys_own_options_still_show() -> None:
    emulate = punchgate("emulate", "zk", "--help")
    assert emulate.returncode == 0, emulate.stderr
    assert "Usage: punchgate emulate zk [OPTIONS]" in emulate.stdout
    assert "--punch-rate" in emulate.stdout and "--comm-key" in emulate.stdout
    probe = punchgate("probe", "zk", "--help")
    assert probe.returncode == 0, probe.stderr
    assert "Usage: punchgate probe zk [OPTIONS] URL" in probe.stdout and "--udp" in probe.stdout


def test_status_without_a_daemon_says_so_in_one_line() -> None:
    """Was: a raw urllib error, wrapped over several lines by the console width."""
    url = f"http://127.0.0.1:{free_port()}"
    result = punchgate("status", "--url", url, env={**os.environ, "COLUMNS": "40"})
    assert result.returncode == 2
    assert result.stdout + result.stderr == (
        f"no punchgate is answering at {url} — is it running? (--config/--url)\n"
    )


def test_status_with_something_that_is_not_a_url() -> None:
    result = punchgate("status", "--url", "localhost:9108")
    assert result.returncode == 2
    assert "localhost:9108 is not a URL such as http://127.0.0.1:9108 (--url)" in result.stdout
