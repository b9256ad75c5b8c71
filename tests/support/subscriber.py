"""A real MQTT subscriber that reconciles punch batches by record id (the "central system").

It runs paho's network loop in its own thread (independent of the test's event loop),
reconnects by itself after a broker restart and resubscribes on every connect. Every
message is kept (topic, payload, retain flag) for later checks such as JSON Schema
validation; punch batches also feed a `Reconciler`.
"""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from tests.support.reconcile import Reconciler
from tests.support.waiting import wait_for, wait_for_async


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool

    def json(self) -> Any:
        return json.loads(self.payload)


class Subscriber:
    """Subscribes to `topic_filter` at QoS 1 and records everything it receives."""

    def __init__(
        self,
        host: str,
        port: int,
        topic_filter: str = "#",
        *,
        protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv311,
        username: str | None = None,
        password: str | None = None,
        tls_context: ssl.SSLContext | None = None,
        qos: int = 1,
        persistent_session: bool = False,
    ) -> None:
        """`persistent_session` (MQTT 3.1.1): the broker keeps the subscription and queues QoS 1
        messages while this client is away, e.g. published before it reconnected after a
        broker restart (the broker must be persistent too, and stopped cleanly)."""
        self.topic_filter = topic_filter
        self.qos = qos
        self.host, self.port = host, port
        self._lock = threading.RLock()  # conditions passed to wait_for may call on()
        self.messages: list[Received] = []
        self.reconciler = Reconciler()
        self.subscriptions = 0  # SUBACKs received (one per (re)connect)
        self.bad_payloads: list[tuple[str, bytes]] = []
        self._client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"test-subscriber-{id(self):x}",
            protocol=protocol,
            clean_session=not persistent_session if protocol == MQTTProtocolVersion.MQTTv311 else None,
        )
        if username is not None:
            self._client.username_pw_set(username, password)
        if tls_context is not None:
            self._client.tls_set_context(tls_context)
        # Reconnect fast: after a broker restart it must be listening again before the gateway is.
        self._client.reconnect_delay_set(min_delay=0.05, max_delay=0.2)  # type: ignore[arg-type]
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if not reason.is_failure:
            client.subscribe(self.topic_filter, qos=self.qos)

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, _mid: int, _codes: Any, _p: Any) -> None:
        with self._lock:
            self.subscriptions += 1

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        received = Received(message.topic, bytes(message.payload), bool(message.retain))
        with self._lock:
            self.messages.append(received)
            if received.topic.endswith("/punches"):
                try:
                    self.reconciler.add_batch(received.json())
                except (ValueError, KeyError, TypeError):
                    self.bad_payloads.append((received.topic, received.payload))

    def start(self, *, timeout: float = 15.0) -> Subscriber:
        self._client.connect_async(self.host, self.port, keepalive=30)
        self._client.loop_start()
        self.wait_subscribed(1, timeout=timeout)
        return self

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def wait_subscribed(self, count: int, *, timeout: float = 15.0) -> None:
        """Wait until the subscription has been acknowledged `count` times in total."""
        if not self.wait_for(lambda: self.subscriptions >= count, timeout=timeout):
            raise TimeoutError(f"subscriber not subscribed ({self.subscriptions}/{count}) within {timeout}s")

    def wait_for(self, condition: Callable[[], bool], *, timeout: float) -> bool:
        """Poll `condition` (run under the subscriber's lock) until it holds or `timeout` passes."""

        def locked() -> bool:
            with self._lock:
                return condition()

        return wait_for(locked, timeout=timeout, interval=0.02)

    def wait_records(self, count: int, *, timeout: float) -> bool:
        """Wait until `count` distinct record ids have arrived."""
        return self.wait_for(lambda: len(self.reconciler.seen) >= count, timeout=timeout)

    async def missing_after(self, ids: set[str], *, timeout: float) -> set[str]:
        """From a coroutine: wait until every id has arrived; the ids still missing at the deadline."""

        def missing() -> set[str]:
            with self._lock:  # the network thread adds to `seen` meanwhile
                return ids - self.reconciler.seen

        await wait_for_async(lambda: not missing(), timeout=timeout, interval=0.1)
        return missing()

    def on(self, topic_suffix: str) -> list[Received]:
        with self._lock:
            return [m for m in self.messages if m.topic.endswith(topic_suffix)]

    def __enter__(self) -> Subscriber:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
