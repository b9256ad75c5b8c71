"""Bad requests over a real broker: each is answered `error` with its code and a sentence naming
the problem, nothing runs, /metrics counts it, and the gateway goes on answering."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Callable
from typing import Any

from punchgate.gateway.mosquitto import free_port
from tests.commands.commander import Commander
from tests.commands.conftest import FAST
from tests.support.config import zk_terminal
from tests.support.gateway import GatewayProcess
from tests.support.schemas import validate


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return str(response.read().decode())


async def test_each_bad_request_is_refused_by_name_and_counted(
    gateway_factory: Callable[..., GatewayProcess], zk_emulators: Callable[..., Any], central: Commander
) -> None:
    (door,) = await zk_emulators(1)
    http_port = free_port()
    allow = ["device.info", "users.list", "users.delete", "gateway.status"]
    gateway = gateway_factory(
        [zk_terminal("door-1", door, poll_interval=30)],
        mqtt=FAST,
        http_port=http_port,
        sections={"commands": {"allow": allow, "max_request_bytes": 2048}},
    )
    await asyncio.to_thread(gateway.start)
    await central.alistening()
    users_before = [(u.uid, u.user_id) for u in door.users]

    good = central.request("users.delete", terminals=["door-1"], args={"user_ids": ["1"]})
    cases: list[tuple[bytes, str | None, str, str]] = [  # payload, id answered, code, words in the sentence
        (b"not json at all", None, "bad_json", "not JSON"),
        (b"[1, 2, 3]", None, "bad_json", "JSON object"),
        (json.dumps({**good, "id": "c1", "command": "device.explode"}).encode(), "c1", "unknown_command", "device.explode"),
        (json.dumps({**good, "id": "c2", "command": "device.restart"}).encode(), "c2", "not_allowed", "allow"),
        (json.dumps({**good, "id": "c3", "args": None}).encode(), "c3", "bad_argument", "args"),
        (json.dumps({k: v for k, v in {**good, "id": "c4"}.items() if k != "args"}).encode(), "c4", "bad_argument", "args is required"),
        (json.dumps({**good, "id": "c5", "args": {"user_ids": [5]}}).encode(), "c5", "bad_argument", "args.user_ids[0]"),
        (json.dumps({**good, "id": "c6", "args": {"user_ids": ["1"], "force": True}}).encode(), "c6", "bad_argument", "args.force is not an argument"),
        (json.dumps({**good, "id": "c7", "terminals": ["door-9"]}).encode(), "c7", "unknown_terminal", "door-9"),
        (json.dumps({k: v for k, v in good.items() if k != "id"}).encode(), None, "bad_request", "id is required"),
        (json.dumps({**good, "id": "c8", "expires_at": "2099-01-01T00:00:00Z"}).encode(), "c8", "bad_request", "max_ttl_seconds"),
        (json.dumps({**good, "id": "c9", "version": 2}).encode(), "c9", "bad_request", "version must be 1"),
        (json.dumps({**good, "id": "c10", "terminals": "door-1"}).encode(), "c10", "bad_request", "terminals must be"),
        (json.dumps({**good, "id": "c11", "pad": "x" * 3000}).encode(), None, "too_large", "at most 2048"),
    ]  # fmt: skip
    for payload, _ident, _code, _words in cases:
        central.publish(payload)
    await central.alistening()  # answered after every case above

    refusals = [a for a in central.all_answers() if a["status"] == "error"]
    assert len(refusals) == len(cases), [a.payload for a in refusals]
    for answer, (_payload, ident, code, words) in zip(refusals, cases, strict=True):
        assert (answer["id"], answer["error"]["code"]) == (ident, code), answer.payload
        assert words in answer["error"]["message"], answer.payload
        assert answer["terminal"] is None and answer["result"] is None
        validate("strict/command-response", answer.payload)
    assert all(a["status"] == "error" or str(a["id"]).startswith("ping") for a in central.all_answers())
    assert [(u.uid, u.user_id) for u in door.users] == users_before  # nothing ran

    metrics = await asyncio.to_thread(_metrics, http_port)
    assert 'punchgate_command_rejected_total{code="bad_json"} 2.0' in metrics
    assert 'punchgate_command_rejected_total{code="bad_argument"} 4.0' in metrics
    assert 'punchgate_command_rejected_total{code="bad_request"} 4.0' in metrics
    assert 'punchgate_command_requests_total{outcome="rejected"} 14.0' in metrics
    for code in ("unknown_command", "not_allowed", "unknown_terminal", "too_large"):
        assert f'punchgate_command_rejected_total{{code="{code}"}} 1.0' in metrics
    assert "command_rejected" in gateway.log_text()

    # Still answering, and the good request runs.
    answer = await central.arun("users.delete", "door-1", args={"user_ids": ["1"]})
    assert answer["status"] == "ok" and answer["result"]["deleted"] == ["1"]


async def test_a_response_topic_outside_the_gateways_answers_is_refused(
    gateway_factory: Callable[..., GatewayProcess], zk_emulators: Callable[..., Any], central: Commander
) -> None:
    """MQTT 5 lets a requester name any response topic; the gateway answers only below its own
    response topic, never on its punch or state topics."""
    (door,) = await zk_emulators(1)
    gateway = gateway_factory([zk_terminal("door-1", door, poll_interval=30)], mqtt=FAST)
    await asyncio.to_thread(gateway.start)
    await central.alistening()
    spoof = Commander(central.host, central.port, name="spoof")
    spoof.reply_topic = "punchgate/gw-test/devices/door-1/punches"
    with spoof, Commander(central.host, central.port, v5=False, name="listener") as listener:
        spoof.send("device.info", terminals=["door-1"], request_id="spoof-1")
        refusal = await asyncio.to_thread(listener.final, "spoof-1", None, timeout=30)
        assert refusal["error"]["code"] == "bad_request" and "response topic" in refusal["error"]["message"]
        assert refusal.topic == "punchgate/gw-test/commands/response"
        assert not spoof.all_answers()
