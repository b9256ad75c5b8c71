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
awaited thing completes; see `_raise_if_cancelled` and `_SessionTasks` for how none is lost here.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
import ssl
import time
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiomqtt
import structlog
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt import client as paho_client
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from punchgate.sync.confirmations import CentralDelivery
from punchgate.sync.confirmations_memory import record_id_of
from punchgate.sync.contract import (
    AuditHead,
    DeviceEvent,
    DeviceState,
    batch_json,
    gateway_offline,
    gateway_online,
)
from punchgate.sync.settings import MqttSettings
from punchgate.sync.store import PendingRow, Store
from punchgate.sync.topics import Topics

log = structlog.get_logger(__name__)

# How long the drain sleeps when nothing is pending and nobody calls notify_new_punches;
# a safety net only (e.g. punches added by another process), not the normal wake-up path.
IDLE_POLL_SECONDS = 5.0
# Reading ahead several messages' worth per query keeps SQLite round trips off the hot path.
READ_AHEAD_BATCHES = 10
# CONNACK reason codes (MQTT 3.1.1 codes 4/5 arrive from paho as their MQTT 5 equivalents).
_AUTH_REFUSED = {4, 5, 134, 135}
# Bounds on leaving a session, so that stopping never waits on the broker.
GOODBYE_TIMEOUT = 2.0  # the retained `offline` published when cancelled
DISCONNECT_TIMEOUT = 2.0  # the DISCONNECT going out (a frozen broker's full socket buffer holds it)
TASK_STOP_TIMEOUT = 5.0  # a session's tasks finishing once cancelled (normally one loop turn)
REPLY_WINDOW = 16  # answers to remote commands awaiting their PUBACK at once


class SessionEnded(Exception):
    """Internal: the current broker session cannot go on (the reason is the cause)."""


@dataclass
class ForwarderStats:
    """Counters for /metrics and the status page. Monotonic except the `last_*` fields."""

    connects: int = 0
    reconnects: int = 0  # connects after the first one
    connect_failures: int = 0
    disconnects: int = 0
    messages_published: int = 0  # every acknowledged message (batches, states, events)
    batches_published: int = 0
    punches_published: int = 0
    publish_failures: int = 0
    # Punches whose publish was started but never confirmed (connection lost, timeout), plus
    # acknowledged ones whose delivery mark failed. They stay pending and are sent again, so
    # the subscriber may see up to this many duplicates. Never a loss.
    possible_duplicates: int = 0
    events_dropped: int = 0  # device events dropped from the full in-memory queue (oldest first)
    last_error: str = ""
    last_connected_at: float | None = None
    last_publish_at: float | None = None
    history: list[str] = field(default_factory=list)  # recent connection errors, newest last
    replies_dropped: int = 0  # command answers dropped from the full in-memory queue (oldest first)


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


def describe_error(exc: BaseException) -> str:
    """A short, operator-readable reason for a failed connection or publish."""
    if isinstance(exc, MqttConnectError):
        code = exc.rc.value if isinstance(exc.rc, ReasonCode) else exc.rc
        reason = str(exc.rc) if isinstance(exc.rc, ReasonCode) else str(exc)
        if code in _AUTH_REFUSED:
            return f"broker refused the connection: not authorised ({reason})"
        return f"broker refused the connection: {reason}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {exc}"
    if isinstance(exc, aiomqtt.MqttError):
        cause = exc.__cause__
        text = str(exc)
        if cause is not None and str(cause) and str(cause) not in text:
            text = f"{text}: {cause}"
        return f"MQTT: {text}"
    if isinstance(exc, OSError):
        return f"network: {exc.strerror or exc}"
    return f"{type(exc).__name__}: {exc}"


def _first_leaf(exc: BaseException) -> BaseException:
    """The first real exception inside (nested) exception groups and SessionEnded wrappers."""
    while True:
        if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
            exc = exc.exceptions[0]
        elif isinstance(exc, SessionEnded) and exc.__cause__ is not None:
            exc = exc.__cause__
        else:
            return exc


def _raise_if_cancelled() -> None:
    """Raise the cancellation an await let slip.

    On Python 3.11, `asyncio.wait_for` (aiomqtt waits for CONNACK, every PUBACK and the
    disconnect with it) returns normally when the cancellation arrives just as the awaited
    thing completes, e.g. a PUBACK read together with the connection's EOF. The request is lost,
    but the task still counts it in `cancelling()`. A loop that went on would ignore `cancel()`.
    Call this after such awaits, once the outcome is recorded (a PUBACK is a PUBACK).
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def _wait_event(event: asyncio.Event, timeout: float) -> None:
    """Until `event` is set or `timeout` passes (`asyncio.wait` never loses a cancellation)."""
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({waiter}, timeout=timeout)
    finally:
        waiter.cancel()


def _close_socket(client: aiomqtt.Client) -> None:
    """Close the client's socket if it is still open; aiomqtt's socket-close callback then takes
    it off the event loop and stops its keepalive task. A no-op after a clean disconnect."""
    with contextlib.suppress(Exception):
        client._client._sock_close()


class _SessionTasks:
    """The tasks of one broker session; the first one to fail ends the session.

    Not an `asyncio.TaskGroup`: on Python 3.11 a group that is already aborting (a lost
    connection failed one task) absorbs a cancellation of the forwarder and raises the session
    error instead, and it waits forever for a child that let its cancellation slip. `stop()`
    cancels whatever still runs, again each round, and gives up after TASK_STOP_TIMEOUT.
    """

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self._failed = asyncio.Event()
        self._failure: BaseException | None = None
        self._stopping = False

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        if self._stopping:
            coro.close()
            raise asyncio.CancelledError  # only reachable from a task that is being stopped
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._on_done)

    def _on_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()  # retrieved for every task, so asyncio never logs it as lost
        if exc is not None and self._failure is None:
            self._failure = exc
            self._failed.set()

    async def first_failure(self) -> BaseException:
        await self._failed.wait()
        assert self._failure is not None
        return self._failure

    async def stop(self) -> None:
        self._stopping = True
        deadline = time.monotonic() + TASK_STOP_TIMEOUT
        while self._tasks:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                names = sorted(task.get_name() for task in self._tasks)
                log.error("mqtt_session_tasks_not_stopping", tasks=names)
                return
            for task in self._tasks:
                task.cancel()
            await asyncio.wait(set(self._tasks), timeout=min(remaining, 0.5))


def tls_context(tls_settings: MqttSettings) -> ssl.SSLContext | None:
    """The client's TLS context from settings (reads the files: call off the event loop)."""
    tls = tls_settings.tls
    if tls is None:
        return None
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca_file) if tls.ca_file else None
    )
    if tls.cert_file is not None and tls.key_file is not None:
        context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    if tls.insecure:
        context.check_hostname = False
    return context


class BatchAssembler:
    """Packs pending rows (oldest first, mixed devices) into per-device messages, in order.

    Backlog rows of one device are packed `batch_size` to a message; `flush()` returns the
    partial batches (the caller decides when half-full messages should go). A live row goes alone, at once (after that device's older rows), so a punch
    seen as it happens is never held back waiting for company.
    """

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self._open: dict[str, list[PendingRow]] = {}

    def add(self, rows: Sequence[PendingRow]) -> list[tuple[str, list[PendingRow]]]:
        batches: list[tuple[str, list[PendingRow]]] = []
        for row in rows:
            if row.source == "live":
                chunk = self._open.pop(row.device, None)
                if chunk:
                    batches.append((row.device, chunk))
                batches.append((row.device, [row]))
                continue
            chunk = self._open.setdefault(row.device, [])
            chunk.append(row)
            if len(chunk) >= self.batch_size:
                batches.append((row.device, chunk))
                del self._open[row.device]
        return batches

    def flush(self) -> list[tuple[str, list[PendingRow]]]:
        """Every partial batch, oldest first (each device's own order is already kept)."""
        batches = sorted(self._open.items(), key=lambda item: item[1][0].pk)
        self._open.clear()
        return batches


def group_batches(rows: Sequence[PendingRow], batch_size: int) -> list[tuple[str, list[PendingRow]]]:
    """All of `rows` as per-device messages (see `BatchAssembler`)."""
    assembler = BatchAssembler(batch_size)
    return [*assembler.add(rows), *assembler.flush()]


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
        self._wake = asyncio.Event()  # new punches committed
        self._rewind = False  # set by a replay: restart the drain cursor
        self._side_wake = asyncio.Event()  # a device state or event to publish
        self._device_states: dict[str, bytes] = {}
        self._dirty_states: set[str] = set()
        self._audit_head: bytes | None = None  # the latest head of the audit chain (retained)
        self._audit_head_sent: bytes | None = None
        self._events: deque[tuple[str, bytes]] = deque()
        self._event_queue_size = event_queue_size
        # Central delivery (sync/confirmations.py): None in broker mode.
        self.central = CentralDelivery(self.mqtt, store) if self.mqtt.delivery == "central" else None
        self._retained: dict[str, bytes] = {}  # other retained messages by topic, latest only
        self._dirty_retained: set[str] = set()
        self._acked: list[int] = []  # acknowledged pks not yet marked delivered
        # Other subscriptions (remote commands): topic -> handler, called on the loop per message.
        self._subscriptions: dict[str, Callable[[Incoming], None]] = {}
        self._replies: deque[Reply] = deque()  # answers to publish, oldest first
        self._replies_in_flight: list[Reply] = []  # published, PUBACK not seen yet
        self._reply_wake = asyncio.Event()
        self._reply_queue_size = event_queue_size * 10
        self._acked_ready = asyncio.Event()
        self._in_flight = 0

    # --- public API -----------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def in_flight(self) -> int:
        """Messages published and neither acknowledged nor failed yet."""
        return self._in_flight

    def notify_new_punches(self) -> None:
        """Wake the drain at once (call after a commit). Safe from any thread."""
        loop = self._loop
        if loop is None:
            return  # not running yet: the first drain reads everything pending anyway
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._wake.set()
        else:
            loop.call_soon_threadsafe(self._wake.set)

    def rewind(self) -> None:
        """Punches older than the drain's cursor are pending again (a replay): read them too.
        Rows in flight at that moment may go out twice, which ids make harmless."""
        self._rewind = True
        self.notify_new_punches()

    def publish_device_state(self, device: str, payload: DeviceState) -> None:
        """Publish a device's retained state now if connected; it is republished on every connect.

        Only the latest state per device is kept (an older one is superseded, not queued).
        """
        self._device_states[device] = payload.model_dump_json().encode()
        self._dirty_states.add(device)
        self._poke_side()

    def publish_audit_head(self, payload: AuditHead) -> None:
        """Publish the audit chain's head, retained on `{base}/audit`: the latest only, again on
        every connect. Call on the event loop."""
        self._audit_head = payload.model_dump_json().encode()
        self._poke_side()

    def publish_event(self, device: str, payload: DeviceEvent) -> None:
        """Queue a device event for QoS 1 delivery; the queue is bounded (oldest dropped, counted)."""
        if len(self._events) >= self._event_queue_size:
            self._events.popleft()
            self.stats.events_dropped += 1
            log.warning("mqtt_event_dropped", device=device, queue=self._event_queue_size)
        self._events.append((device, payload.model_dump_json().encode()))
        self._poke_side()

    def publish_gateway_event(self, payload: DeviceEvent) -> None:
        """Queue an event of the gateway itself (on `{base}/events`) in the same bounded queue."""
        self.publish_event("", payload)  # "" is never a device name (the config forbids it)

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
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self._reply_wake.set)

    def publish_retained(self, topic: str, payload: bytes) -> None:
        """Publish a retained message (latest per topic kept, superseding an older one not sent
        yet), now if connected and again on every connect: digests, gateway state updates."""
        self._retained[topic] = payload
        self._dirty_retained.add(topic)
        self._poke_side()

    async def _read_pending(self, limit: int, after: int) -> list[PendingRow]:
        """The drain's next rows: pending ones (broker mode), or unsent and due ones (central)."""
        if self.central is None:
            return await asyncio.to_thread(self.store.pending_batch, limit, after=after)
        return await asyncio.to_thread(self.central.next_rows, limit, after)

    def _poke_side(self) -> None:
        loop = self._loop
        if loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._side_wake.set()
        else:
            loop.call_soon_threadsafe(self._side_wake.set)

    # --- the reconnect loop ---------------------------------------------------------------
    async def run(self) -> None:
        """Forward until cancelled. Broker trouble never escapes: it is logged, counted, retried.

        Cancelled, it ends within a few seconds in every phase (see the module docstring).
        """
        self._loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            try:
                context = await asyncio.to_thread(tls_context, self.mqtt)
                client = self._client(context)
                await self._connect(client)
                try:
                    attempt = 0
                    await self._session(client)
                finally:
                    await self._disconnect(client)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._session_failed(exc)
            finally:
                await self._flush_acked()
                await self._flush_sent_if_stopping()
                self._set_connected(False, self.stats.last_error)
            _raise_if_cancelled()  # lost by aiomqtt's CONNACK or disconnect wait
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

    async def _connect(self, client: aiomqtt.Client) -> None:
        """TCP, TLS and CONNECT/CONNACK (aiomqtt bounds the wait for CONNACK by its timeout)."""
        try:
            await client.__aenter__()
        except BaseException:
            # aiomqtt leaves the socket open when CONNACK does not come in time (or we are
            # cancelled meanwhile): a late CONNACK would make it a second client with our id.
            _close_socket(client)
            raise

    async def _disconnect(self, client: aiomqtt.Client) -> None:
        """A clean DISCONNECT (the broker then drops our will) when it goes out within
        DISCONNECT_TIMEOUT; the socket is closed in any case."""
        try:
            await asyncio.wait_for(client.__aexit__(None, None, None), DISCONNECT_TIMEOUT)
        except TimeoutError:
            log.info("mqtt_disconnect_unclean", error=f"DISCONNECT not sent within {DISCONNECT_TIMEOUT:g} s")
        except (aiomqtt.MqttError, OSError) as exc:
            log.info("mqtt_disconnect_unclean", error=describe_error(exc))
        finally:
            _close_socket(client)
        _raise_if_cancelled()

    def _session_failed(self, exc: BaseException) -> None:
        leaf = _first_leaf(exc)
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
        tasks = _SessionTasks()
        try:
            _raise_if_cancelled()  # lost by aiomqtt's CONNACK wait
            self.stats.connects += 1
            if self.stats.last_connected_at is not None:
                self.stats.reconnects += 1
            self.stats.last_connected_at = time.time()
            online = gateway_online(version=self.version, started_at=self.started_at)
            await self._publish(client, self.topics.gateway_state, online, retain=True)
            _raise_if_cancelled()
            self._set_connected(True)
            log.info("mqtt_connected", host=self.mqtt.host, port=self.mqtt.port, protocol=self.mqtt.protocol)
            self._dirty_states.update(self._device_states)  # retained states go out again on every connect
            self._audit_head_sent = None  # so does the audit head
            tasks.spawn(self._watch_connection(client), "mqtt-watch")
            tasks.spawn(self._mark_acked(), "mqtt-mark-acked")
            tasks.spawn(self._side_messages(client), "mqtt-side")
            tasks.spawn(self._publish_replies(client, tasks), "mqtt-replies")
            tasks.spawn(self._drain(client, tasks), "mqtt-drain")
            raise await tasks.first_failure()
        except asyncio.CancelledError:
            # Shutting down: stop publishing, then say goodbye ourselves (a clean disconnect
            # suppresses the will). Bounded; a second cancellation ends it at once.
            await tasks.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    self._publish(client, self.topics.gateway_state, gateway_offline(), retain=True),
                    GOODBYE_TIMEOUT,
                )
            raise
        finally:
            await tasks.stop()

    async def _publish(
        self,
        client: aiomqtt.Client,
        topic: str,
        payload: bytes,
        *,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> None:
        self._in_flight += 1
        try:
            await client.publish(
                topic, payload, qos=1, retain=retain, properties=properties, timeout=self.mqtt.publish_timeout
            )
        except aiomqtt.MqttError as exc:
            self.stats.publish_failures += 1
            raise SessionEnded(f"publish to {topic} failed") from exc
        finally:
            self._in_flight -= 1
        self.stats.messages_published += 1
        self.stats.last_publish_at = time.time()

    async def _watch_connection(self, client: aiomqtt.Client) -> None:
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

    async def _publish_replies(self, client: aiomqtt.Client, tasks: _SessionTasks) -> None:
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
        if self.mqtt.protocol == "5":
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.ContentType = "application/json"
            if reply.correlation_data is not None:
                properties.CorrelationData = reply.correlation_data
        try:
            await self._publish(client, reply.topic, reply.payload, properties=properties)
        finally:
            window.release()
        self._replies_in_flight[:] = [r for r in self._replies_in_flight if r is not reply]
        if reply.on_sent is not None:
            try:
                reply.on_sent()
            except Exception:
                log.exception("mqtt_reply_callback_failed", topic=reply.topic)

    async def _drain(self, client: aiomqtt.Client, tasks: _SessionTasks) -> None:
        window = asyncio.Semaphore(self.max_in_flight)
        read_limit = self.mqtt.batch_size * READ_AHEAD_BATCHES
        after = 0  # pks up to here are in flight or done in this session
        while True:
            self._wake.clear()
            if self._rewind:
                # Rows went back to pending behind our cursor (a replay): read from the start.
                self._rewind = False
                after = 0
            rows = await self._read_pending(read_limit, after)
            if not rows:
                await _wait_event(self._wake, IDLE_POLL_SECONDS)
                continue
            after = max(after, rows[-1].pk)  # re-sent rows (central) lie behind the cursor
            # Each read is sent as soon as it is grouped, so the broker is never idle while
            # the next read runs (carrying partial batches over would starve the pipeline).
            batches = group_batches(rows, self.mqtt.batch_size)
            seqs = await asyncio.to_thread(self.store.next_batch_seqs, [device for device, _ in batches])
            for (device, chunk), seq in zip(batches, seqs, strict=True):
                payload = batch_json(
                    gateway=self.settings.gateway_id,
                    device=device,
                    seq=seq,
                    records=[r.payload for r in chunk],
                )
                pks = [r.pk for r in chunk]
                if self.central is not None:
                    ids = [record_id_of(r.payload) for r in chunk]
                    self.central.remember_batch(device, seq, pks, ids)
                await window.acquire()
                tasks.spawn(self._publish_batch(client, device, payload, pks, window), "mqtt-publish")

    async def _publish_batch(
        self, client: aiomqtt.Client, device: str, payload: bytes, pks: list[int], window: asyncio.Semaphore
    ) -> None:
        confirmed = False
        try:
            await self._publish(client, self.topics.device_punches(device), payload)
            confirmed = True
        finally:
            window.release()
            if not confirmed:
                self.stats.possible_duplicates += len(pks)
        self.stats.batches_published += 1
        self.stats.punches_published += len(pks)
        self._acked.extend(pks)
        self._acked_ready.set()

    async def _mark_acked(self) -> None:
        """Mark acknowledged rows delivered, several batches per transaction when they pile up."""
        while True:
            await self._acked_ready.wait()
            await self._flush_acked()

    async def _flush_acked(self) -> None:
        self._acked_ready.clear()
        if not self._acked:
            return
        pks, self._acked = self._acked, []
        if self.central is not None:
            # Acknowledged by the broker is only "sent" until confirmed; the confirmations'
            # thread writes that mark unless a confirmation comes first (sync/confirmations.py).
            self.central.acked(pks)
            return
        try:
            # Shielded: once the rows are handed to the buffer, let the commit finish.
            await asyncio.shield(asyncio.to_thread(self.store.mark_delivered, pks))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # They stay pending and are sent again: a duplicate, never a loss.
            self.stats.possible_duplicates += len(pks)
            log.error("buffer_mark_delivered_failed", rows=len(pks), error=str(exc))

    async def _flush_sent_if_stopping(self) -> None:
        """Central delivery, stopping: rows still waiting for their confirmation are marked sent
        now, so the next start sends them again after `resend_after`, as for every unconfirmed
        row, not at once (a crash cannot do this: those go again at the start)."""
        task = asyncio.current_task()
        if self.central is None or task is None or not task.cancelling():
            return
        try:
            await asyncio.shield(asyncio.to_thread(self.central.flush_sent))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("buffer_mark_sent_failed", error=str(exc))

    async def _side_messages(self, client: aiomqtt.Client) -> None:
        """Retained device states (latest only) and queued device events."""
        self._dirty_retained.update(self._retained)  # `publish_retained`: again in every session
        while True:
            self._side_wake.clear()
            for topic in sorted(self._dirty_retained):  # a newer one sets _side_wake: no lost wake-up
                retained = self._retained[topic]
                await self._publish(client, topic, retained, retain=True)
                if self._retained.get(topic) is retained:
                    self._dirty_retained.discard(topic)
                _raise_if_cancelled()
            for device in sorted(self._dirty_states):
                payload = self._device_states[device]
                await self._publish(client, self.topics.device_state(device), payload, retain=True)
                if self._device_states.get(device) is payload:
                    self._dirty_states.discard(device)
                _raise_if_cancelled()
            head = self._audit_head
            if head is not None and head is not self._audit_head_sent:
                await self._publish(client, self.topics.audit, head, retain=True)
                self._audit_head_sent = head
                _raise_if_cancelled()
            while self._events:
                device, payload = self._events[0]
                topic = self.topics.device_events(device) if device else self.topics.gateway_events
                await self._publish(client, topic, payload)
                if self._events and self._events[0][1] is payload:
                    self._events.popleft()
                _raise_if_cancelled()
            if not self._dirty_states and not self._events and self._audit_head is self._audit_head_sent:
                await self._side_wake.wait()
