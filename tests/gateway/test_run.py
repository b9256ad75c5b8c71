"""`punchgate run` as a real process: systemd notifications over a real socket, signals, shutdown."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.broker import free_port
from tests.support.config import zk_terminal
from tests.support.gateway import GatewayProcess
from tests.support.waiting import wait_until

GatewayFactory = Callable[..., GatewayProcess]


def make_gateway(gateway_factory: GatewayFactory, **options: object) -> GatewayProcess:
    return gateway_factory(gateway_id="gw-run", shutdown_timeout=5, **options)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_ready_watchdog_and_clean_stop(gateway_factory: GatewayFactory, sig: signal.Signals) -> None:
    gateway = make_gateway(gateway_factory)
    gateway.start(extra_env={"WATCHDOG_USEC": "400000"})  # systemd would ping-check every 0.4 s
    ready = gateway.wait_for_notification("READY=1", timeout=1)
    assert "STATUS=reading 0 terminals" in ready
    # Pings every 0.2 s from the event loop, and a status line once the broker is connected.
    wait_until(
        lambda: gateway.read_notifications().count("WATCHDOG=1") >= 3,
        timeout=5,
        message="three watchdog pings",
    )
    gateway.wait_until(
        lambda: any(
            m.startswith("STATUS=") and "broker connected" in m and "0 pending" in m
            for m in gateway.read_notifications()
        ),
        timeout=10,
        message=lambda: f"a 'broker connected' status in {gateway.notifications}",
    )
    started = time.monotonic()
    gateway.send_signal(sig)
    gateway.wait_for_notification("STOPPING=1", timeout=10)
    assert gateway.stop(sig=None, timeout=15) == 0  # the exit the signal above asked for
    assert time.monotonic() - started < 10
    assert '"event": "gateway_stopped"' in gateway.log_text()


def _catches(pid: int, sig: signal.Signals) -> bool:
    """True once the process has a handler for `sig` (the SigCgt mask in /proc/PID/status)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    for line in status.splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    return False


def _loading_config(pid: int) -> bool:
    """True once the process has mapped pydantic's core library: it is reading its config."""
    try:
        return "pydantic_core" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def _sigterm_when_ready_or_loading(gateway: GatewayProcess) -> None:
    """SIGTERM the moment the process catches it or starts reading its config (polling /proc)."""
    pid = gateway.pid
    wait_until(
        lambda: _catches(pid, signal.SIGTERM) or _loading_config(pid) or gateway.exited() is not None,
        timeout=20,
        interval=0.0005,
        message="a SIGTERM handler in the new process",
    )
    os.kill(pid, signal.SIGTERM)


def test_sigterm_right_after_start_stops_cleanly(gateway_factory: GatewayFactory) -> None:
    """systemd may stop the service a moment after starting it: a SIGTERM at any moment from
    the first one the process can catch must end in a clean stop (exit 0, the stop line), never
    in the default action. The signal goes out as soon as the process catches SIGTERM or starts
    loading its config, whichever comes first. Before the fix the handler came only with the
    event loop, after the imports and the config (~0.3 s): the process was killed by it."""
    before_start = 0
    for attempt in range(4):
        gateway = make_gateway(
            gateway_factory,
            broker_port=free_port(),
            terminals=[zk_terminal("t", free_port(), timeout=1)],
        )
        gateway.start(ready_timeout=None)
        _sigterm_when_ready_or_loading(gateway)
        code = gateway.stop(sig=None, timeout=20)
        log = gateway.log_text()
        assert code == 0, f"attempt {attempt}: exit {code}\n{log}"
        assert '"event": "gateway_stopped"' in log, log
        if gateway.events("gateway_stop_before_start"):
            before_start += 1
            assert not gateway.events("gateway_started"), log
    # The handler is there from the start, so the signal nearly always lands before the
    # daemon has started anything (a busy machine may delay this test's own polling).
    assert before_start >= 1


def test_unreachable_terminal_and_broker_never_block_start(gateway_factory: GatewayFactory) -> None:
    # Nothing listens on either port: the daemon still comes up, and says why things fail.
    gateway = make_gateway(
        gateway_factory,
        broker_port=free_port(),
        terminals=[zk_terminal("gone", free_port(), timeout=1)],
    )
    gateway.start(ready_timeout=20)
    gateway.wait_until(lambda: '"fault": "unreachable"' in gateway.log_text(), timeout=20)
    log = gateway.log_text()
    assert '"fault": "unreachable"' in log and '"device": "gone"' in log
    assert gateway.stop() == 0


def test_config_secrets_never_reach_the_log(gateway_factory: GatewayFactory) -> None:
    gateway = make_gateway(
        gateway_factory,
        terminals=[zk_terminal("locked", free_port(), timeout=1)],
        env={"PUNCHGATE_MQTT_PASSWORD": "pw-do-not-log", "PUNCHGATE_COMM_KEY_LOCKED": "73519"},
    )
    gateway.start()
    # Both secrets have been used: the broker session (with the password) is up, and the
    # terminal (with its comm key) has been tried.
    gateway.wait_until(
        lambda: gateway.events("mqtt_connected") and '"device": "locked"' in gateway.log_text(),
        timeout=20,
    )
    assert gateway.stop() == 0
    log = gateway.log_text()
    assert "gateway_started" in log
    assert "pw-do-not-log" not in log and "73519" not in log
