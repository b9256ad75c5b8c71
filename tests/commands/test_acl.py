"""config/mosquitto-acl.example, as shipped, on a real mosquitto: central's account commands a
gateway; another gateway's account cannot (the broker drops its request, nothing runs)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.commands.commander import Commander
from tests.commands.conftest import FAST, sections
from tests.support.broker import Broker
from tests.support.config import zk_terminal
from tests.support.gateway import GatewayProcess

ACL = Path(__file__).resolve().parents[2] / "config" / "mosquitto-acl.example"
USERS = {"site-a": "pw-a", "site-b": "pw-b", "central": "pw-central"}


async def test_another_gateways_credentials_cannot_command_this_one(
    tmp_path: Path,
    broker_factory: Callable[..., Broker],
    gateway_factory: Callable[..., GatewayProcess],
    zk_emulators: Callable[..., Any],
) -> None:
    broker = broker_factory(users=USERS, extra_config=f"acl_file {ACL}\nlog_type debug")  # debug: denials
    await asyncio.to_thread(broker.start)
    (door,) = await zk_emulators(1)
    gateway = gateway_factory(
        [zk_terminal("door-1", door, poll_interval=30)],
        gateway_id="site-a",
        broker_port=broker.port,
        mqtt={**FAST, "username": "site-a", "password": "pw-a"},
        sections=sections(),
    )
    await asyncio.to_thread(gateway.start)
    central = Commander(broker.host, broker.port, gateway="site-a", username="central", password="pw-central")
    intruder = Commander(broker.host, broker.port, gateway="site-a", username="site-b", password="pw-b")
    with central, intruder:
        await central.alistening()  # the gateway, under the ACL, subscribes and answers central
        users_before = len(door.users)
        attempt = intruder.send("users.upsert", terminals=["door-1"], args={"users": [{"user_id": "666"}]})
        # Published (and acknowledged) before central's next request: had the broker passed it,
        # the gateway would have read it first.
        answer = await central.arun("users.list", "door-1")
        assert answer["status"] == "ok" and answer["result"]["count"] == users_before
        assert door.data.user_by_id("666") is None and len(door.users) == users_before
        assert not [a for a in central.all_answers() + intruder.all_answers() if a["id"] == attempt]
        assert not [e for e in gateway.events("command_received") if e["id"] == attempt]
        assert "Denied PUBLISH from" in broker.log_tail(2000)  # the broker, not luck, stopped it
