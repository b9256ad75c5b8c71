"""A central system that sends remote commands to a gateway over a real broker and reads the answers.

    with Commander(broker.host, broker.port) as central:
        request_id = central.send("device.info", terminals=["door-1"])
        answers = central.finals(request_id, ["door-1"], timeout=30)   # terminal -> final answer

MQTT 5 by default: each request carries a response topic of the commander's own and its id as
correlation data, and every answer is checked to echo it. With `v5=False` it listens on the
gateway's default response topic and matches answers by id. Answers are kept in arrival order
(`answers(id)`), with the time they arrived, for round-trip measurements.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.support.waiting import wait_for

_ids = itertools.count(1)


@dataclass(frozen=True)
class Answer:
    payload: dict[str, Any]
    topic: str
    correlation: bytes | None
    received: float  # time.monotonic()

    def __getitem__(self, key: str) -> Any:
        return self.payload[key]


class Commander:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        gateway: str = "gw-test",
        prefix: str = "punchgate",
        v5: bool = True,
        username: str | None = None,
        password: str | None = None,
        name: str | None = None,
    ) -> None:
        self.base = f"{prefix}/{gateway}"
        self.v5 = v5
        self.name = name or f"central-{next(_ids)}-{id(self):x}"
        self.reply_topic = (
            f"{self.base}/commands/response/{self.name}" if v5 else f"{self.base}/commands/response"
        )
        self._lock = threading.Lock()
        self._answers: list[Answer] = []
        self.sent: dict[str, float] = {}  # request id -> time.monotonic() when published
        self._subscribed = threading.Event()
        self._client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.name,
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
        )
        if username is not None:
            self._client.username_pw_set(username, password)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *_args: self._subscribed.set()
        self._client.on_message = self._on_message
        self.host, self.port = host, port

    # --- connection -------------------------------------------------------------------------
    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if not reason.is_failure:
            client.subscribe(self.reply_topic, qos=1)

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        correlation = None
        properties = getattr(message, "properties", None)
        if properties is not None and hasattr(properties, "CorrelationData"):
            correlation = bytes(properties.CorrelationData)
        try:
            payload = json.loads(message.payload)
        except ValueError:
            payload = {"unreadable": message.payload.hex()}
        with self._lock:
            self._answers.append(Answer(payload, message.topic, correlation, time.monotonic()))

    def start(self, timeout: float = 15.0) -> Commander:
        self._client.connect(self.host, self.port, keepalive=30)
        self._client.loop_start()
        if not self._subscribed.wait(timeout):
            raise TimeoutError(f"{self.name}: not subscribed to {self.reply_topic} within {timeout} s")
        return self

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> Commander:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # --- requests ---------------------------------------------------------------------------
    def request(
        self,
        command: str,
        *,
        terminals: list[str] | str | None = None,
        args: dict[str, Any] | None = None,
        request_id: str | None = None,
        expires_at: str | None = None,
        requester: str = "test-central",
        **extra: Any,
    ) -> dict[str, Any]:
        """A request as the contract has it (not sent)."""
        body: dict[str, Any] = {
            "schema": "punchgate.command",
            "version": 1,
            "id": request_id or f"req-{next(_ids)}-{time.monotonic_ns()}",
            "requester": requester,
            "command": command,
            **extra,
        }
        if terminals is not None:
            body["terminals"] = terminals
        if args is not None:
            body["args"] = args
        if expires_at is not None:
            body["expires_at"] = expires_at
        return body

    def send(self, command: str, **options: Any) -> str:
        """Build and publish a request (QoS 1); its id."""
        body = self.request(command, **options)
        self.publish(json.dumps(body).encode(), correlation=body["id"].encode())
        return str(body["id"])

    def publish(self, payload: bytes, *, correlation: bytes | None = None, topic: str | None = None) -> None:
        """Publish raw bytes on the gateway's request topic (or `topic`), and wait for the PUBACK."""
        properties = None
        if self.v5:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.ResponseTopic = self.reply_topic
            if correlation is not None:
                properties.CorrelationData = correlation
        if correlation is not None:
            self.sent[correlation.decode(errors="replace")] = time.monotonic()
        info = self._client.publish(
            topic or f"{self.base}/commands/request", payload, qos=1, properties=properties
        )
        info.wait_for_publish(10)

    # --- answers ----------------------------------------------------------------------------
    def answers(self, request_id: str | None) -> list[Answer]:
        with self._lock:
            return [a for a in self._answers if a.payload.get("id") == request_id]

    def all_answers(self) -> list[Answer]:
        with self._lock:
            return list(self._answers)

    def finals(
        self, request_id: str, terminals: list[str | None], *, timeout: float
    ) -> dict[str | None, Answer]:
        """Wait until each of `terminals` (None: the request as a whole) has a final answer."""

        def final() -> dict[str | None, Answer]:
            found: dict[str | None, Answer] = {}
            for answer in self.answers(request_id):
                if answer["status"] in ("ok", "error", "expired") and answer["terminal"] in terminals:
                    found.setdefault(answer["terminal"], answer)
            return found

        if not wait_for(lambda: len(final()) == len(terminals), timeout=timeout, interval=0.02):
            got = [(a["terminal"], a["status"]) for a in self.answers(request_id)]
            raise AssertionError(
                f"{request_id}: no final answer for every one of {terminals} in {timeout} s: {got}"
            )
        return final()

    def final(self, request_id: str, terminal: str | None = None, *, timeout: float = 30) -> Answer:
        return self.finals(request_id, [terminal], timeout=timeout)[terminal]

    def run(
        self, command: str, terminal: str | None = None, *, timeout: float = 30, **options: Any
    ) -> Answer:
        """Send one command to one terminal (or the gateway) and return its final answer."""
        terminals = [terminal] if terminal is not None else None
        request_id = self.send(command, terminals=terminals, **options)
        return self.final(request_id, terminal, timeout=timeout)

    def wait_listening(self, *, timeout: float = 30) -> None:
        """Until the gateway answers: it subscribes once connected, and a request published
        before that is lost (its session is clean). Retries with the same id, as a central
        system should: the gateway runs it once whatever number of copies arrive."""
        request_id = f"ping-{next(_ids)}-{time.monotonic_ns()}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.send("gateway.status", request_id=request_id)
            if wait_for(lambda: bool(self.answers(request_id)), timeout=1.0, interval=0.02):
                return
        raise TimeoutError(f"the gateway did not answer within {timeout} s")

    # --- from a coroutine (the emulators share the test's event loop: never block it) --------
    async def alistening(self, *, timeout: float = 30) -> None:
        await asyncio.to_thread(self.wait_listening, timeout=timeout)

    async def afinals(
        self, request_id: str, terminals: list[str | None], *, timeout: float
    ) -> dict[str | None, Answer]:
        return await asyncio.to_thread(self.finals, request_id, terminals, timeout=timeout)

    async def afinal(self, request_id: str, terminal: str | None = None, *, timeout: float = 30) -> Answer:
        return await asyncio.to_thread(self.final, request_id, terminal, timeout=timeout)

    async def arun(
        self, command: str, terminal: str | None = None, *, timeout: float = 30, **options: Any
    ) -> Answer:
        return await asyncio.to_thread(lambda: self.run(command, terminal, timeout=timeout, **options))
