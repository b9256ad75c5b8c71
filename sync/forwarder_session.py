"""What one broker session of the forwarder is made of (sync/forwarder.py runs the sessions).

Held here, apart from the reconnect loop and from what a session sends, because every part of
the forwarder (drain, side messages, command answers) uses them and none of them is about what
is sent:

* the forwarder's counters (`ForwarderStats`) and the one counted QoS 1 publish (`Publisher`);
* the client's TLS context, connecting and disconnecting with bounded waits, and the
  operator-readable reason a connection or publish failed (`describe_error`);
* `SessionTasks`, the tasks of one session, and the helpers that keep a cancellation from being
  lost (`raise_if_cancelled`, `wait_event`).

Python 3.11's `asyncio.wait_for`, which aiomqtt uses for every acknowledged call, can lose a
cancellation that arrives just as the awaited thing completes; `raise_if_cancelled` and
`SessionTasks` are how none is lost here. Stopping is bounded whatever the broker does: the
DISCONNECT gets DISCONNECT_TIMEOUT and the socket is then closed regardless, and a session's
tasks get TASK_STOP_TIMEOUT.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
import structlog
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from punchgate.sync.settings import MqttSettings

log = structlog.get_logger(__name__)

# CONNACK reason codes (MQTT 3.1.1 codes 4/5 arrive from paho as their MQTT 5 equivalents).
_AUTH_REFUSED = {4, 5, 134, 135}
# Bounds on leaving a session, so that stopping never waits on the broker.
GOODBYE_TIMEOUT = 2.0  # the retained `offline` published when cancelled
DISCONNECT_TIMEOUT = 2.0  # the DISCONNECT going out (a frozen broker's full socket buffer holds it)
TASK_STOP_TIMEOUT = 5.0  # a session's tasks finishing once cancelled (normally one loop turn)


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


class Publisher:
    """Every message the forwarder sends goes through `publish`: QoS 1, awaited until its PUBACK,
    counted, and a failure ends the session (`SessionEnded`)."""

    def __init__(self, stats: ForwarderStats, mqtt: MqttSettings) -> None:
        self.stats = stats
        self.mqtt = mqtt
        self.in_flight = 0  # messages published and neither acknowledged nor failed yet

    async def publish(
        self,
        client: aiomqtt.Client,
        topic: str,
        payload: bytes,
        *,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> None:
        self.in_flight += 1
        try:
            await client.publish(
                topic, payload, qos=1, retain=retain, properties=properties, timeout=self.mqtt.publish_timeout
            )
        except aiomqtt.MqttError as exc:
            self.stats.publish_failures += 1
            raise SessionEnded(f"publish to {topic} failed") from exc
        finally:
            self.in_flight -= 1
        self.stats.messages_published += 1
        self.stats.last_publish_at = time.time()


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


def first_leaf(exc: BaseException) -> BaseException:
    """The first real exception inside (nested) exception groups and SessionEnded wrappers."""
    while True:
        if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
            exc = exc.exceptions[0]
        elif isinstance(exc, SessionEnded) and exc.__cause__ is not None:
            exc = exc.__cause__
        else:
            return exc


def raise_if_cancelled() -> None:
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


async def wait_event(event: asyncio.Event, timeout: float) -> None:
    """Until `event` is set or `timeout` passes (`asyncio.wait` never loses a cancellation)."""
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({waiter}, timeout=timeout)
    finally:
        waiter.cancel()


def set_from_any_thread(loop: asyncio.AbstractEventLoop | None, event: asyncio.Event) -> None:
    """Set `event` of `loop` from the loop itself or from another thread; before the forwarder
    runs (`loop` is None) there is nothing to wake, its first session reads everything anyway."""
    if loop is None:
        return
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        event.set()
    else:
        loop.call_soon_threadsafe(event.set)


def _close_socket(client: aiomqtt.Client) -> None:
    """Close the client's socket if it is still open; aiomqtt's socket-close callback then takes
    it off the event loop and stops its keepalive task. A no-op after a clean disconnect."""
    with contextlib.suppress(Exception):
        client._client._sock_close()


async def connect(client: aiomqtt.Client) -> None:
    """TCP, TLS and CONNECT/CONNACK (aiomqtt bounds the wait for CONNACK by its timeout)."""
    try:
        await client.__aenter__()
    except BaseException:
        # aiomqtt leaves the socket open when CONNACK does not come in time (or we are
        # cancelled meanwhile): a late CONNACK would make it a second client with our id.
        _close_socket(client)
        raise


async def disconnect(client: aiomqtt.Client) -> None:
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
    raise_if_cancelled()


class SessionTasks:
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
