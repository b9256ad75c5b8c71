"""A minimal central consumer for the central-delivery tests: it receives punch batches (paho,
its own network thread) and confirms their ids on `{base}/confirm`, or holds them back while
`confirming` is off, or confirms by batch instead. Every id it saw is counted, so a test can
tell how often the gateway sent a punch."""

from __future__ import annotations

import json
import threading
from collections import Counter
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.waiting import wait_for


class Confirmer:
    def __init__(self, host: str, port: int, *, prefix: str = "punchgate", by_batch: bool = False) -> None:
        self.prefix = prefix
        self.by_batch = by_batch
        self.confirming = True
        self.seen: Counter[str] = Counter()  # record id -> times received
        self.confirmed: set[str] = set()
        self.held: dict[str, list[dict[str, Any]]] = {}  # gateway -> batches received while not confirming
        self.states: list[dict[str, Any]] = []  # retained gateway states received
        self.digests: dict[str, dict[str, Any]] = {}  # device -> latest digests message
        self.subscriptions = 0
        self._lock = threading.RLock()
        self._client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"confirmer-{id(self):x}"
        )
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.reconnect_delay_set(min_delay=0.05, max_delay=0.2)  # type: ignore[arg-type]
        self.host, self.port = host, port

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if not reason.is_failure:
            topics = ("+/devices/+/punches", "+/state", "+/devices/+/digests")
            client.subscribe([(f"{self.prefix}/{topic}", 1) for topic in topics])

    def _on_subscribe(self, *_args: Any) -> None:
        with self._lock:
            self.subscriptions += 1

    def _on_message(self, client: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        data = json.loads(message.payload)
        with self._lock:
            if message.topic.endswith("/state"):
                self.states.append(data)
                return
            if message.topic.endswith("/digests"):
                self.digests[data["device"]] = data
                return
            self.seen.update(r["id"] for r in data["records"])
            if self.confirming:
                self._confirm(data)
            else:
                self.held.setdefault(data["gateway"], []).append(data)

    def _confirm(self, batch: dict[str, Any]) -> None:
        ids = [r["id"] for r in batch["records"]]
        body: dict[str, Any] = {"schema": "punchgate.confirm", "version": 1, "consumer": "confirmer"}
        if self.by_batch:
            body["batches"] = [{"device": batch["device"], "seq": batch["seq"], "count": len(ids)}]
        else:
            body["ids"] = ids
        self._client.publish(f"{self.prefix}/{batch['gateway']}/confirm", json.dumps(body), qos=1)
        self.confirmed.update(ids)

    def publish_raw(self, gateway: str, payload: bytes) -> None:
        self._client.publish(f"{self.prefix}/{gateway}/confirm", payload, qos=1)

    def start(self) -> Confirmer:
        self._client.connect_async(self.host, self.port, keepalive=30)
        self._client.loop_start()
        if not wait_for(lambda: self.subscriptions >= 1, timeout=15):
            raise TimeoutError("the confirmer did not subscribe")
        return self

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def seen_ids(self) -> set[str]:
        with self._lock:
            return set(self.seen)

    def last_state(self) -> dict[str, Any]:
        with self._lock:
            return self.states[-1] if self.states else {}
