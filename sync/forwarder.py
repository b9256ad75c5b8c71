"""The MQTT forwarder: the single owner of the broker connection (docs/architecture.md, mqtt-contract.md).

One task runs a reconnect loop (aiomqtt does not reconnect by itself) with exponential
backoff and jitter. Each connection is a *session*:

1. publish the retained `{"state": "online", ...}` (the last will says `offline`),
2. republish every device's latest retained state,
3. drain the buffer: read pending rows oldest first in large batches, group them per device
   into messages of `batch_size` records (a live punch goes alone), publish at QoS 1 with
   several messages in flight, and mark exactly the acknowledged rows delivered,
4. publish queued device events.

Any failure (a lost connection, a publish that is not acknowledged in time) ends the session:
rows that were not acknowledged stay pending and go out again on the next connection, so the
subscriber may see a few duplicates (ids make them harmless) but never a gap. The buffer is
the only source of truth: a fresh MQTT client is built for every session, so nothing is
ever held only in the client's memory.

Stopping is `cancel()` on the task running `run()`, and it is bounded whatever the broker does
(refusing, dropping, or frozen mid-publish): the session's tasks are cancelled (again, if one
let the cancellation slip), the retained `offline` gets GOODBYE_TIMEOUT, the DISCONNECT gets
DISCONNECT_TIMEOUT and then the socket is closed regardless. Python 3.11's `asyncio.wait_for`,
which aiomqtt uses for every acknowledged call, can lose a cancellation that arrives just as the
awaited thing completes; see `raise_if_cancelled` and `SessionTasks` for how none is lost here.

This module holds the reconnect loop and one session's course; each job a session runs is its
own module, and the names other code imports are re-exported here:

* sync/forwarder_session.py: a session's parts (counters, the counted publish, TLS, connect and
  disconnect, the session's tasks, the cancellation helpers, error descriptions);
* sync/forwarder_drain.py: the buffer to the broker (batching, delivery marks, central mode);
* sync/forwarder_side.py: retained device states, the audit head, other retained messages, events;
* sync/forwarder_commands.py: subscriptions (remote commands, confirmations) and their answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
import ssl
import time
from collections.abc import Callable
from typing import Protocol

import aiomqtt
import structlog
from paho.mqtt import client as paho_client

from punchgate.sync.confirmations import CentralDelivery
from punchgate.sync.contract import AuditHead, DeviceEvent, DeviceState, gateway_offline, gateway_online
from punchgate.sync.forwarder_commands import REPLY_WINDOW, CommandChannel, Incoming, Reply
from punchgate.sync.forwarder_drain import (
    IDLE_POLL_SECONDS,
    READ_AHEAD_BATCHES,
    BatchAssembler,
    Drain,
    group_batches,
)
from punchgate.sync.forwarder_session import (
    DISCONNECT_TIMEOUT,
    GOODBYE_TIMEOUT,
    TASK_STOP_TIMEOUT,
    ForwarderStats,
    Publisher,
    SessionEnded,
    SessionTasks,
    connect,
    describe_error,
    disconnect,
    first_leaf,
    raise_if_cancelled,
    tls_context,
)
from punchgate.sync.forwarder_side import SideMessages
from punchgate.sync.settings import MqttSettings
from punchgate.sync.store import Store
from punchgate.sync.topics import Topics

# The names other code imports from here. The constants are copies for reading: the drain reads
# its own IDLE_POLL_SECONDS (patch `forwarder_drain`, not this module, to change it in a test).
__all__ = [
    "DISCONNECT_TIMEOUT",
    "GOODBYE_TIMEOUT",
    "IDLE_POLL_SECONDS",
    "READ_AHEAD_BATCHES",
    "REPLY_WINDOW",
    "TASK_STOP_TIMEOUT",
    "BatchAssembler",
    "Forwarder",
    "ForwarderConfig",
    "ForwarderStats",
    "Incoming",
    "Reply",
    "SessionEnded",
    "describe_error",
    "group_batches",
    "tls_context",
]

log = structlog.get_logger(__name__)


class ForwarderConfig(Protocol):
    """What the forwarder reads of the gateway's settings (the composed Settings has both)."""

    @property
    def gateway_id(self) -> str: ...

    @property
    def mqtt(self) -> MqttSettings: ...


class Forwarder:
    """Publishes the buffer to the broker. Run `await run()` in one task; cancel it to stop."""

    def __init__(
        self,
        settings: ForwarderConfig,
        store: Store,
        *,
        version: str,
        max_in_flight: int = 16,
        event_queue_size: int = 1000,
    ) -> None:
        self.settings = settings
        self.mqtt = settings.mqtt
        self.store = store
        self.version = version
        self.topics = Topics(settings.mqtt.topic_prefix, settings.gateway_id)
        self.max_in_flight = max_in_flight
        self.stats = ForwarderStats()
        self.started_at = dt.datetime.now(dt.UTC)
        self.on_connection_change: list[Callable[[bool, str], None]] = []
        self._connected = False
        self._loop: asyncio.AbstractEventLoop | None = None
        # Central delivery (sync/confirmations.py): None in broker mode.
        self.central = CentralDelivery(self.mqtt, store) if self.mqtt.delivery == "central" else None
        # Every message of every session goes through this one publisher (counted, in_flight).
        self._publisher = Publisher(self.stats, self.mqtt)
        self._drain = Drain(
            gateway_id=settings.gateway_id,
            mqtt=self.mqtt,
            store=store,
            central=self.central,
            topics=self.topics,
            stats=self.stats,
            publisher=self._publisher,
            max_in_flight=max_in_flight,
        )
        self._side = SideMessages(
            topics=self.topics, stats=self.stats, publisher=self._publisher, event_queue_size=event_queue_size
        )
        self._commands = CommandChannel(
            protocol=self.mqtt.protocol,
            topics=self.topics,
            central=self.central,
            stats=self.stats,
            publisher=self._publisher,
            reply_queue_size=event_queue_size * 10,
        )

    # --- public API -----------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def in_flight(self) -> int:
        """Messages published and neither acknowledged nor failed yet."""
        return self._publisher.in_flight

    def notify_new_punches(self) -> None:
        """Wake the drain at once (call after a commit). Safe from any thread."""
        self._drain.notify()

    def rewind(self) -> None:
        """Punches older than the drain's cursor are pending again (a replay): read them too.
        Rows in flight at that moment may go out twice, which ids make harmless."""
        self._drain.rewind()

    def publish_device_state(self, device: str, payload: DeviceState) -> None:
        """Publish a device's retained state now if connected; it is republished on every connect.

        Only the latest state per device is kept (an older one is superseded, not queued).
        """
        self._side.publish_device_state(device, payload)

    def publish_audit_head(self, payload: AuditHead) -> None:
        """Publish the audit chain's head, retained on `{base}/audit`: the latest only, again on
        every connect. Call on the event loop."""
        self._side.publish_audit_head(payload)

    def publish_event(self, device: str, payload: DeviceEvent) -> None:
        """Queue a device event for QoS 1 delivery; the queue is bounded (oldest dropped, counted)."""
        self._side.publish_event(device, payload)

    def publish_gateway_event(self, payload: DeviceEvent) -> None:
        """Queue an event of the gateway itself (on `{base}/events`) in the same bounded queue."""
        self.publish_event("", payload)  # "" is never a device name (the config forbids it)

    def subscribe(self, topic: str, handler: Callable[[Incoming], None]) -> None:
        """Subscribe to `topic` (QoS 1) on every connection and hand each message to `handler`,
        on the loop, in order. Register before `run()`. The handler must be quick (queue the
        work) and must not raise; a message it fails on is logged and dropped."""
        self._commands.subscribe(topic, handler)

    def publish_reply(self, reply: Reply) -> None:
        """Queue an answer for QoS 1 delivery, in order; it waits while the broker is away. The
        queue is bounded (oldest dropped, counted): the caller keeps what must survive."""
        self._commands.publish_reply(reply)

    def publish_retained(self, topic: str, payload: bytes, *, keep: bool = True) -> None:
        """Publish a retained message (latest per topic kept, superseding an older one not sent
        yet), now if connected and again on every connect: digests, gateway state updates.
        `keep=False`: forgotten once sent (its publisher sends it again on every connect, see
        `on_connection_change`), so thousands of them are not held twice."""
        self._side.publish_retained(topic, payload, keep=keep)

    # --- the reconnect loop ---------------------------------------------------------------
    async def run(self) -> None:
        """Forward until cancelled. Broker trouble never escapes: it is logged, counted, retried.

        Cancelled, it ends within a few seconds in every phase (see the module docstring).
        """
        self._loop = asyncio.get_running_loop()
        # The parts wake themselves from other threads through the loop (notify, publish_*).
        self._drain.loop = self._side.loop = self._commands.loop = self._loop
        attempt = 0
        while True:
            try:
                context = await asyncio.to_thread(tls_context, self.mqtt)
                client = self._client(context)
                await connect(client)
                try:
                    attempt = 0
                    await self._session(client)
                finally:
                    await disconnect(client)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._session_failed(exc)
            finally:
                await self._drain.flush_acked()
                await self._drain.flush_sent_if_stopping()
                self._set_connected(False, self.stats.last_error)
            raise_if_cancelled()  # lost by aiomqtt's CONNACK or disconnect wait
            delay = self._backoff(attempt)
            attempt += 1
            log.info("mqtt_reconnect_wait", seconds=round(delay, 2), attempt=attempt)
            await asyncio.sleep(delay)

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with 'equal jitter': half fixed, half random, capped."""
        ceiling = min(self.mqtt.reconnect_max, self.mqtt.reconnect_min * (2.0 ** min(attempt, 30)))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def _client(self, context: ssl.SSLContext | None) -> aiomqtt.Client:
        v5 = self.mqtt.protocol == "5"
        password = self.mqtt.password.get_secret_value() if self.mqtt.password else None
        client = aiomqtt.Client(
            self.mqtt.host,
            self.mqtt.port,
            identifier=self.mqtt.client_id or f"punchgate-{self.settings.gateway_id}",
            username=self.mqtt.username,
            password=password,
            protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
            # The buffer is the truth; a broker-side session would only replay stale copies.
            clean_session=None if v5 else True,
            clean_start=True if v5 else paho_client.MQTT_CLEAN_START_FIRST_ONLY,
            will=aiomqtt.Will(self.topics.gateway_state, gateway_offline(), qos=1, retain=True),
            keepalive=self.mqtt.keepalive,
            timeout=self.mqtt.publish_timeout,
            tls_context=context,
            # Room for our drain window plus state/event messages, so paho never queues them.
            max_inflight_messages=self.max_in_flight + 8 + REPLY_WINDOW,
        )
        # aiomqtt warns above this many awaited publishes; our window is deliberate.
        client.pending_calls_threshold = self.max_in_flight + 16 + REPLY_WINDOW
        return client

    def _session_failed(self, exc: BaseException) -> None:
        leaf = first_leaf(exc)
        reason = describe_error(leaf)
        self.stats.last_error = reason
        self.stats.history = [*self.stats.history[-9:], reason]
        if self._connected:
            self.stats.disconnects += 1
            log.warning("mqtt_session_ended", error=reason)
        else:
            self.stats.connect_failures += 1
            if reason.startswith("broker refused the connection: not authorised"):
                log.error("mqtt_not_authorised", error=reason, username=self.mqtt.username)
            else:
                log.warning("mqtt_connect_failed", error=reason, host=self.mqtt.host, port=self.mqtt.port)
        if not isinstance(leaf, aiomqtt.MqttError | OSError | SessionEnded | TimeoutError):
            # Not broker trouble: a bug or a buffer problem. Log loudly, keep the daemon alive.
            log.error("mqtt_session_crashed", error=reason, exc_info=leaf)

    def _set_connected(self, connected: bool, reason: str = "") -> None:
        if connected == self._connected:
            return
        self._connected = connected
        for listener in self.on_connection_change:
            try:
                listener(connected, reason)
            except Exception:
                log.exception("mqtt_connection_listener_failed")

    # --- one session ----------------------------------------------------------------------
    async def _session(self, client: aiomqtt.Client) -> None:
        """Runs until the connection fails (raises why) or the forwarder is cancelled."""
        tasks = SessionTasks()
        try:
            raise_if_cancelled()  # lost by aiomqtt's CONNACK wait
            self.stats.connects += 1
            if self.stats.last_connected_at is not None:
                self.stats.reconnects += 1
            self.stats.last_connected_at = time.time()
            online = gateway_online(version=self.version, started_at=self.started_at)
            await self._publisher.publish(client, self.topics.gateway_state, online, retain=True)
            raise_if_cancelled()
            self._set_connected(True)
            log.info("mqtt_connected", host=self.mqtt.host, port=self.mqtt.port, protocol=self.mqtt.protocol)
            self._side.session_started()  # retained states and the audit head go out again
            tasks.spawn(self._commands.watch_connection(client), "mqtt-watch")
            tasks.spawn(self._drain.mark_acked(), "mqtt-mark-acked")
            tasks.spawn(self._side.run(client), "mqtt-side")
            tasks.spawn(self._commands.publish_replies(client, tasks), "mqtt-replies")
            tasks.spawn(self._drain.run(client, tasks), "mqtt-drain")
            raise await tasks.first_failure()
        except asyncio.CancelledError:
            # Shutting down: stop publishing, then say goodbye ourselves (a clean disconnect
            # suppresses the will). Bounded; a second cancellation ends it at once.
            await tasks.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    self._publisher.publish(
                        client, self.topics.gateway_state, gateway_offline(), retain=True
                    ),
                    GOODBYE_TIMEOUT,
                )
            raise
        finally:
            await tasks.stop()
