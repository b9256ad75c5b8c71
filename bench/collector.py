"""The "central system" of a benchmark: a real MQTT subscriber that notes every punch id.

paho runs its network loop in its own thread, so the collector keeps receiving whatever the
caller's event loop is busy with. With `persistent=True` it keeps a broker-side session
(clean_session off, fixed client id): QoS 1 messages published while it is away, or while
the broker restarts cleanly, are queued for it and delivered when it is back.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.waiting import wait_for


class PunchCollector:
    def __init__(
        self,
        port: int,
        gateway_id: str,
        *,
        persistent: bool = False,
        client_id: str | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.topic = f"punchgate/{gateway_id}/devices/+/punches"
        self._lock = threading.Lock()
        self.first_seen: dict[str, float] = {}  # record id -> wall time of first arrival
        self.devices: dict[str, str] = {}  # record id -> device it came from
        self.records = 0  # records received, repeats included
        self.duplicates = 0
        self.messages = 0
        self.bad_payloads: list[bytes] = []
        self.subscribed = threading.Event()
        self._client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            # A persistent session is found again by its client id.
            client_id=client_id or f"bench-central-{uuid.uuid4().hex[:8]}",
            clean_session=not persistent,
        )
        self._client.reconnect_delay_set(min_delay=1, max_delay=1)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._host, self._port = host, port

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if not reason.is_failure:
            client.subscribe(self.topic, qos=1)

    def _on_subscribe(self, *_args: Any) -> None:
        self.subscribed.set()

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        now = time.time()
        try:
            batch = json.loads(message.payload)
            device = str(batch["device"])
            ids = [str(record["id"]) for record in batch["records"]]
        except (ValueError, KeyError, TypeError):
            with self._lock:
                self.bad_payloads.append(bytes(message.payload))
            return
        with self._lock:
            self.messages += 1
            self.records += len(ids)
            for record_id in ids:
                if record_id in self.first_seen:
                    self.duplicates += 1
                else:
                    self.first_seen[record_id] = now
                    self.devices[record_id] = device

    def start(self, timeout: float = 15.0) -> PunchCollector:
        self._client.connect_async(self._host, self._port, keepalive=30)
        self._client.loop_start()
        if not self.subscribed.wait(timeout):
            self.stop()
            raise TimeoutError(f"collector not subscribed to {self.topic} within {timeout} s")
        return self

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    @property
    def unique(self) -> int:
        with self._lock:
            return len(self.first_seen)

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return dict(self.first_seen)

    def wait_unique(self, count: int, timeout: float) -> bool:
        """Wait until `count` distinct ids have arrived (False if not within `timeout`)."""
        return wait_for(lambda: self.unique >= count, timeout=timeout, interval=0.02)
