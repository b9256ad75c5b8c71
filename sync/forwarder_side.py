"""The forwarder's side messages: retained device states, the audit head, other retained
messages (digests, gateway state updates) and queued device and gateway events.

Separate from the drain (sync/forwarder_drain.py) because these live only in memory and follow
other rules than punches: a retained message keeps only its latest value per topic (an older one
not sent yet is superseded, not queued) and goes out again on every connect; events wait in a
bounded queue that drops its oldest when full (counted). The callers (the composition root, the
digests) publish on the event loop or from other threads; a session's `run` sends what is due
and then waits to be poked.
"""

from __future__ import annotations

import asyncio
from collections import deque

import aiomqtt
import structlog

from punchgate.sync.contract import AuditHead, DeviceEvent, DeviceState
from punchgate.sync.forwarder_session import (
    ForwarderStats,
    Publisher,
    raise_if_cancelled,
    set_from_any_thread,
)
from punchgate.sync.topics import Topics

log = structlog.get_logger(__name__)


class SideMessages:
    """What the forwarder publishes besides punches; one per forwarder, running in each session."""

    def __init__(
        self, *, topics: Topics, stats: ForwarderStats, publisher: Publisher, event_queue_size: int
    ) -> None:
        self.topics = topics
        self.stats = stats
        self.publisher = publisher
        self.loop: asyncio.AbstractEventLoop | None = None  # the forwarder's, once it runs
        self._side_wake = asyncio.Event()  # a device state or event to publish
        self._device_states: dict[str, bytes] = {}
        self._dirty_states: set[str] = set()
        self._audit_head: bytes | None = None  # the latest head of the audit chain (retained)
        self._audit_head_sent: bytes | None = None
        self._events: deque[tuple[str, bytes]] = deque()
        self._event_queue_size = event_queue_size
        self._retained: dict[str, bytes] = {}  # other retained messages by topic, latest only
        self._dirty_retained: set[str] = set()
        self._unkept: set[str] = set()  # retained topics forgotten once sent (`publish_retained`)

    def publish_device_state(self, device: str, payload: DeviceState) -> None:
        """Publish a device's retained state now if connected; it is republished on every connect.

        Only the latest state per device is kept (an older one is superseded, not queued).
        """
        self._device_states[device] = payload.model_dump_json().encode()
        self._dirty_states.add(device)
        self._poke()

    def publish_audit_head(self, payload: AuditHead) -> None:
        """Publish the audit chain's head, retained on `{base}/audit`: the latest only, again on
        every connect. Call on the event loop."""
        self._audit_head = payload.model_dump_json().encode()
        self._poke()

    def publish_event(self, device: str, payload: DeviceEvent) -> None:
        """Queue a device event for QoS 1 delivery; the queue is bounded (oldest dropped, counted)."""
        if len(self._events) >= self._event_queue_size:
            self._events.popleft()
            self.stats.events_dropped += 1
            log.warning("mqtt_event_dropped", device=device, queue=self._event_queue_size)
        self._events.append((device, payload.model_dump_json().encode()))
        self._poke()

    def publish_retained(self, topic: str, payload: bytes, *, keep: bool = True) -> None:
        """Publish a retained message (latest per topic kept, superseding an older one not sent
        yet), now if connected and again on every connect: digests, gateway state updates.
        `keep=False`: forgotten once sent; its publisher sends it again after a connect."""
        self._retained[topic] = payload
        self._dirty_retained.add(topic)
        if keep:
            self._unkept.discard(topic)
        else:
            self._unkept.add(topic)
        self._poke()

    def _poke(self) -> None:
        set_from_any_thread(self.loop, self._side_wake)

    def session_started(self) -> None:
        """Connected: the retained device states and the audit head go out again."""
        self._dirty_states.update(self._device_states)  # retained states go out again on every connect
        self._audit_head_sent = None  # so does the audit head

    async def run(self, client: aiomqtt.Client) -> None:
        """Retained device states (latest only) and queued device events."""
        self._dirty_retained.update(self._retained)  # `publish_retained`: again in every session
        while True:
            self._side_wake.clear()
            for topic in sorted(self._dirty_retained):  # a newer one sets _side_wake: no lost wake-up
                retained = self._retained[topic]
                await self.publisher.publish(client, topic, retained, retain=True)
                if self._retained.get(topic) is retained:
                    self._dirty_retained.discard(topic)
                    if topic in self._unkept:
                        del self._retained[topic]
                        self._unkept.discard(topic)
                raise_if_cancelled()
            for device in sorted(self._dirty_states):
                payload = self._device_states[device]
                await self.publisher.publish(client, self.topics.device_state(device), payload, retain=True)
                if self._device_states.get(device) is payload:
                    self._dirty_states.discard(device)
                raise_if_cancelled()
            head = self._audit_head
            if head is not None and head is not self._audit_head_sent:
                await self.publisher.publish(client, self.topics.audit, head, retain=True)
                self._audit_head_sent = head
                raise_if_cancelled()
            while self._events:
                device, payload = self._events[0]
                topic = self.topics.device_events(device) if device else self.topics.gateway_events
                await self.publisher.publish(client, topic, payload)
                if self._events and self._events[0][1] is payload:
                    self._events.popleft()
                raise_if_cancelled()
            if not self._dirty_states and not self._events and self._audit_head is self._audit_head_sent:
                await self._side_wake.wait()
