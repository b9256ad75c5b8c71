"""`punchgate buffer check|recover`, and the daemon refusing a damaged buffer as a real process:
a dedicated exit code the unit does not restart on, and one clear log line, no traceback."""

from __future__ import annotations

import configparser
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from punchgate.gateway.app import EXIT_BUFFER_REFUSED
from punchgate.gateway.cli import main
from tests.support.broker import free_port
from tests.support.config import write_config
from tests.support.gateway import REPO, GatewayProcess
from tests.sync.test_buffer_damage import DAMAGE, GATEWAY, make_buffer, open_buffer

GatewayFactory = Callable[..., GatewayProcess]


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(
        tmp_path / "gateway.toml",
        gateway_id=GATEWAY,
        broker_port=free_port(),
        buffer_path=tmp_path / "buffer.db",
    )


def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def test_check_on_a_sound_buffer_exits_0_with_counts_and_identity(config: Path, tmp_path: Path) -> None:
    make_buffer(tmp_path / "buffer.db", punches=40, delivered=15)
    code, output = run_cli("buffer", "check", "--config", str(config))
    assert code == 0, output
    assert "OK" in output and "integrity_check: ok" in output
    assert "25 pending, 15 delivered" in output
    assert f"identity: gateway '{GATEWAY}'" in output and "40 punches stored" in output
    assert f"companion: gateway '{GATEWAY}'" in output


def test_check_on_a_damaged_buffer_exits_1_saying_what_and_what_next(config: Path, tmp_path: Path) -> None:
    make_buffer(tmp_path / "buffer.db", punches=40)
    os.truncate(tmp_path / "buffer.db", 0)
    code, output = run_cli("buffer", "check", "--config", str(config))
    assert code == 1
    assert "DAMAGED" in output and "problem (empty)" in output and "punchgate buffer recover" in output


def test_recover_then_check_is_sound(config: Path, tmp_path: Path) -> None:
    make_buffer(tmp_path / "buffer.db", punches=40)
    DAMAGE["corrupt header"][0](tmp_path / "buffer.db")
    code, output = run_cli("buffer", "recover", "--config", str(config))
    assert code == 0, output
    assert "punches: 40 rows read, 40 written" in output and "kept aside:" in output
    assert run_cli("buffer", "check", "--config", str(config))[0] == 0


def test_recover_refuses_while_the_buffer_is_in_use(config: Path, tmp_path: Path) -> None:
    make_buffer(tmp_path / "buffer.db", punches=40)
    store = open_buffer(tmp_path / "buffer.db")
    try:
        code, output = run_cli("buffer", "recover", "--config", str(config))
        assert run_cli("buffer", "check", "--config", str(config))[1].count(f"by process {os.getpid()}") == 1
    finally:
        store.close()
    assert code == 1
    assert f"process {os.getpid()} is using it" in output and "systemctl stop punchgate" in output
    assert not list(tmp_path.glob("buffer.db.damaged-*"))


def test_the_unit_does_not_restart_a_refused_buffer() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(REPO / "systemd" / "punchgate.service")
    assert str(EXIT_BUFFER_REFUSED) in unit["Service"]["RestartPreventExitStatus"].split()


# --- the daemon, as a real process --------------------------------------------------------------
def refused_start(gateway: GatewayProcess) -> list[dict[str, object]]:
    """Start the daemon on a refused buffer; its error records (exactly one is expected)."""
    gateway.start(ready_timeout=None)
    assert gateway.process is not None
    assert gateway.process.wait(30) == EXIT_BUFFER_REFUSED, gateway.log_tail()
    log = gateway.log_text()
    assert "Traceback" not in log, log
    errors = [
        json.loads(line) for line in log.splitlines() if line.startswith("{") and '"level": "error"' in line
    ]
    assert [e["event"] for e in errors] == ["buffer_refused"], log
    assert "READY=1" not in "".join(gateway.read_notifications(0.05))
    return errors


@pytest.mark.parametrize("kind", ["truncated to 0 bytes", "random bytes", "deleted"])
def test_the_daemon_refuses_a_damaged_buffer_with_its_own_exit_code_and_one_line(
    gateway_factory: GatewayFactory, tmp_path: Path, kind: str
) -> None:
    buffer = tmp_path / "buffer.db"
    make_buffer(buffer, punches=50, gateway_id="gw-test")
    if kind == "deleted":
        buffer.unlink()
    else:
        DAMAGE[kind][0](buffer)
    size = buffer.stat().st_size if buffer.exists() else None
    [error] = refused_start(gateway_factory(broker_port=free_port()))
    message = str(error["error"])
    assert (
        str(buffer) in message
        and "punchgate buffer check" in message
        and "punchgate buffer recover" in message
    )
    assert (
        error["problem"]
        == {"truncated to 0 bytes": "empty", "random bytes": "not_sqlite", "deleted": "missing"}[kind]
    )
    assert (buffer.stat().st_size if buffer.exists() else None) == size  # left as it was


def test_after_a_refusal_recover_lets_the_daemon_start_again(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    buffer = tmp_path / "buffer.db"
    make_buffer(buffer, punches=50, gateway_id="gw-test")
    os.truncate(buffer, 0)
    gateway = gateway_factory(broker_port=free_port())
    refused_start(gateway)
    recovered = subprocess.run(
        [
            sys.executable,
            "-m",
            "punchgate.gateway",
            "buffer",
            "recover",
            "--config",
            str(gateway.config_path),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert recovered.returncode == 0, recovered.stderr
    assert "kept aside" in recovered.stdout
    gateway.start(ready_timeout=30)  # READY=1: the daemon runs on the new file
    assert gateway.stop() == 0
