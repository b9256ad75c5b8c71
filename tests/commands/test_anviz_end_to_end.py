"""Remote commands end to end on an Anviz terminal: commander -> mosquitto -> `punchgate run` ->
emulated Anviz terminal over TCP. What TC_B can do, and the two things it cannot (disable and
enable) answered `unsupported` at once, without waiting for the terminal."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from punchgate.drivers.anviz.emulator import EmulatedTerminal, TcpServer
from tests.commands.commander import Commander
from tests.commands.conftest import FAST, sections
from tests.support.broker import Broker
from tests.support.config import write_config
from tests.support.gateway import GatewayProcess
from tests.support.schemas import validate
from tests.support.subscriber import Subscriber


def test_commands_on_an_anviz_terminal(tmp_path: Path, broker: Broker, subscriber: Subscriber) -> None:
    terminal = EmulatedTerminal(7, serial_number="AZ-CMD-7")
    terminal.add_history(30, users=5)
    with TcpServer([terminal]) as server:
        config = write_config(
            tmp_path / "gateway.toml",
            gateway_id="gw-test",
            broker_port=broker.port,
            buffer_path=tmp_path / "buffer.db",
            mqtt=FAST,
            sections=sections(),
            terminals=[
                {
                    "type": "anviz",
                    "name": "gate",
                    "endpoint": f"tcp://127.0.0.1:{server.port}",
                    "device_id": 7,
                    "poll_interval": 30,
                    "timeout": 0.5,
                }
            ],
        )
        with GatewayProcess(config) as gateway, Commander(broker.host, broker.port) as central:
            gateway.wait_until(
                lambda: subscriber.reconciler.records >= 30, timeout=60, message="the first read"
            )
            central.wait_listening()

            def ok(command: str, **options: Any) -> dict[str, Any]:
                answer = central.run(command, "gate", **options)
                validate("strict/command-response", answer.payload)
                assert answer["status"] == "ok", answer.payload
                return dict(answer["result"])

            info = ok("device.info")
            assert (info["serial_number"], info["user_count"]) == ("AZ-CMD-7", 5)

            terminal.punch(1001)
            assert ok("device.read_now")["records_read"] == 1  # new records only (live may have stored it)

            ahead = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=90)).isoformat()
            ok("device.set_time", args={"time": ahead})
            assert abs((terminal.clock() - dt.datetime.now()).total_seconds() - 90) < 5

            listed = ok("users.list")
            assert sorted(u["user_id"] for u in listed["users"]) == ["1000", "1001", "1002", "1003", "1004"]
            upsert = {
                "users": [
                    {"user_id": "1002", "name": "Renée"},
                    {"user_id": "77", "name": "李娜", "card": 4242},
                ]
            }
            assert ok("users.upsert", args=upsert) == {"created": ["77"], "updated": ["1002"]}
            assert terminal.staff[77].card == 4242 and terminal.staff[1002].name == "Renée"
            misfit = central.run(
                "users.upsert", "gate", args={"users": [{"user_id": "78", "name": "Christopher Robin"}]}
            )
            assert (
                misfit["error"]["code"] == "user_does_not_fit" and "user '78'" in misfit["error"]["message"]
            )
            assert ok("users.delete", args={"user_ids": ["77", "9"]}) == {
                "deleted": ["77"],
                "not_found": ["9"],
            }

            for command in ("device.disable", "device.enable"):
                answer = central.run(command, "gate")
                assert answer["error"]["code"] == "unsupported", answer.payload
                assert "no command to disable or enable" in answer["error"]["message"]
                assert [a["status"] for a in central.answers(answer["id"])] == [
                    "accepted",
                    "error",
                ]  # not queued

            terminal.punch(1003)
            terminal.punch(1004)
            gateway.wait_until(lambda: terminal.new_count == 2, timeout=10, message="two new punches")
            wrong = central.run("log.clear", "gate", args={"serial": "AZ-OTHER"})
            assert wrong["error"]["code"] == "serial_mismatch" and terminal.new_count == 2
            cleared = ok("log.clear", args={"serial": "AZ-CMD-7"})
            assert cleared["records_read"] == 2 and terminal.new_count == 0  # marked read; kept in the log

            before = len(subscriber.on("/devices/gate/punches"))
            now = dt.datetime.now(dt.UTC)
            span = {
                "from": (now - dt.timedelta(days=30)).isoformat(),
                "to": (now + dt.timedelta(hours=1)).isoformat(),
            }
            assert ok("punches.resend", args=span)["requeued"] == 33  # the clock runs 90 s ahead now
            gateway.wait_until(
                lambda: len(subscriber.on("/devices/gate/punches")) > before, timeout=20, message="resent"
            )

            ok("device.restart")
            assert terminal.restarts == 1
            assert ok("device.info")["serial_number"] == "AZ-CMD-7"  # reconnected
            assert gateway.stop() == 0
