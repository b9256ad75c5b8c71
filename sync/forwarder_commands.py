"""What reaches the gateway over its broker connection, and the answers it sends back.

The forwarder owns the only connection, so messages for the gateway come in through it: remote
commands on the topics registered with `subscribe` (gateway/commands/), and in central delivery
the consumer's confirmations on `{base}/confirm` (handed to sync/confirmations.py). Answers to
commands (`Reply`) wait in a bounded in-memory queue until a session publishes them. Separate
from the drain and the side messages because it is the one two-way part: it routes incoming
messages to their handlers and keeps each answer until its PUBACK, so that those a lost
connection left unacknowledged go out first on the next one.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import aiomqtt
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from punchgate.sync.confirmations import CentralDelivery
from punchgate.sync.forwarder_session import ForwarderStats, Publisher, SessionTasks
from punchgate.sync.topics import Topics

log = structlog.get_logger(__name__)

REPLY_WINDOW = 16  # answers to remote commands awaiting their PUBACK at once


@dataclass(frozen=True, slots=True)
class Incoming:
    """A message on a topic the gateway subscribed to with `Forwarder.subscribe`."""

    topic: str
    payload: bytes
    response_topic: str | None = None  # MQTT 5: where the sender wants the answer
    correlation_data: bytes | None = None  # MQTT 5: to echo with the answer


@dataclass(frozen=True, slots=True)
class Reply:
    """An answer to publish (QoS 1, not retained); `on_sent` runs on the loop after its PUBACK."""

    topic: str
    payload: bytes
    correlation_data: bytes | None = None
    on_sent: Callable[[], None] | None = None


class CommandChannel:
    """Subscriptions and their handlers, and the queue of answers; one per forwarder."""

    def __init__(
        self,
        *,
        protocol: str,
        topics: Topics,
        central: CentralDelivery | None,
        stats: ForwarderStats,
        publisher: Publisher,
        reply_queue_size: int,
    ) -> None:
        self.protocol = protocol  # "5" sends answers with MQTT 5 properties
        self.topics = topics
        self.central = central  # None in broker mode: no confirmations to route
        self.stats = stats
        self.publisher = publisher
        self.loop: asyncio.AbstractEventLoop | None = None  # the forwarder's, once it runs
        # Other subscriptions (remote commands): topic -> handler, called on the loop per message.
        self._subscriptions: dict[str, Callable[[Incoming], None]] = {}
        self._replies: deque[Reply] = deque()  # answers to publish, oldest first
        self._replies_in_flight: list[Reply] = []  # published, PUBACK not seen yet
        self._reply_wake = asyncio.Event()
        self._reply_queue_size = reply_queue_size

    def subscribe(self, topic: str, handler: Callable[[Incoming], None]) -> None:
        """Subscribe to `topic` (QoS 1) on every connection and hand each message to `handler`,
        on the loop, in order. Register before `run()`. The handler must be quick (queue the
        work) and must not raise; a message it fails on is logged and dropped."""
        self._subscriptions[topic] = handler

    def publish_reply(self, reply: Reply) -> None:
        """Queue an answer for QoS 1 delivery, in order; it waits while the broker is away. The
        queue is bounded (oldest dropped, counted): the caller keeps what must survive."""
        if len(self._replies) >= self._reply_queue_size:
            self._replies.popleft()
            self.stats.replies_dropped += 1
            log.warning("mqtt_reply_dropped", queue=self._reply_queue_size)
        self._replies.append(reply)
        loop = self.loop
        if loop is not None:
            loop.call_soon_threadsafe(self._reply_wake.set)

    async def watch_connection(self, client: aiomqtt.Client) -> None:
        """Ends the session the moment the connection drops (pending publishes never would)."""
        central = self.central
        if central is not None:  # confirmations of what central stored
            await client.subscribe(self.topics.confirm, qos=1)
        for topic in self._subscriptions:  # remote commands (`subscribe`)
            await client.subscribe(topic, qos=1)
        async for message in client.messages:  # without subscriptions this only waits
            if not isinstance(message.payload, bytes):
                continue
            handler = self._subscriptions.get(message.topic.value)
            if handler is not None:
                self._hand_over(handler, message)
            elif central is not None:
                central.submit(message.payload)  # applied by its own thread, several per commit

    def _hand_over(self, handler: Callable[[Incoming], None], message: aiomqtt.Message) -> None:
        assert isinstance(message.payload, bytes)
        properties = message.properties
        response_topic = getattr(properties, "ResponseTopic", None) if properties is not None else None
        correlation = getattr(properties, "CorrelationData", None) if properties is not None else None
        incoming = Incoming(
            message.topic.value,
            message.payload,
            response_topic if isinstance(response_topic, str) else None,
            bytes(correlation) if isinstance(correlation, bytes | bytearray) else None,
        )
        try:
            handler(incoming)
        except Exception:
            log.exception("mqtt_incoming_handler_failed", topic=incoming.topic)

    async def publish_replies(self, client: aiomqtt.Client, tasks: SessionTasks) -> None:
        """Queued answers, oldest first, up to REPLY_WINDOW awaiting their PUBACK at once (one
        at a time, a burst of answers would wait on one round trip each). An answer is kept
        until its PUBACK: those a lost connection left unacknowledged go out first next time."""
        if self._replies_in_flight:
            self._replies.extendleft(reversed(self._replies_in_flight))
            self._replies_in_flight.clear()
        window = asyncio.Semaphore(REPLY_WINDOW)
        while True:
            self._reply_wake.clear()
            while self._replies:
                await window.acquire()
                reply = self._replies.popleft()
                self._replies_in_flight.append(reply)
                tasks.spawn(self._publish_reply(client, reply, window), "mqtt-reply")
            await self._reply_wake.wait()

    async def _publish_reply(self, client: aiomqtt.Client, reply: Reply, window: asyncio.Semaphore) -> None:
        properties = None
        if self.protocol == "5":
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.ContentType = "application/json"
            if reply.correlation_data is not None:
                properties.CorrelationData = reply.correlation_data
        try:
            await self.publisher.publish(client, reply.topic, reply.payload, properties=properties)
        finally:
            window.release()
        self._replies_in_flight[:] = [r for r in self._replies_in_flight if r is not reply]
        if reply.on_sent is not None:
            try:
                reply.on_sent()
            except Exception:
                log.exception("mqtt_reply_callback_failed", topic=reply.topic)
