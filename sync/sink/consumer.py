"""The sink's MQTT side and its writer: receive, validate, commit, acknowledge, confirm.

Flow (docs/sink.md):

1. paho-mqtt (MQTT 5, its own network thread) keeps a persistent session (fixed client id,
   `clean_start=False`, a session expiry) and subscribes, in a shared subscription group
   (`$share/{group}/...`), to every gateway's punches and events, so that N sinks split the
   stream; retained states and digests are subscribed to without the group (MQTT 5 sends no
   retained messages to shared subscriptions), so every sink keeps them (idempotent upserts).
2. Messages are acknowledged by hand (`manual_ack`): the broker keeps each one until the
   writer committed it. A sink killed before its commit gets them again (or, with the group,
   another sink does, once the session is gone), and the gateways re-send what no sink confirms.
3. One writer thread takes what arrived (up to `max_messages`, waiting at most `linger` for
   more), validates every payload against the consumer schema (`validate.py`; a bad one goes to
   the dead-letter table with the reason), writes all of it in one transaction (`db.write`),
   commits, then acknowledges the messages in the order they arrived and publishes one
   confirmation per gateway with the ids of every punch now stored (new or already there).
4. A database that is down is retried with backoff (nothing is acknowledged meanwhile); a
   flush the database refuses for its content (a value out of range, say) is split up, and
   the one message it cannot take goes to the dead-letter table instead. The sink never stops
   on bad input.
"""

from __future__ import annotations

import datetime as dt
import json
import queue
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
import sqlalchemy as sa
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from punchgate.sync.contract import CONFIRM_SCHEMA_NAME
from punchgate.sync.sink import db
from punchgate.sync.sink.validate import Invalid, Validators

log = structlog.get_logger(__name__)

CONFIRM_CHUNK = 5000  # ids per confirmation message
RETRY_MAX = 10.0  # seconds between attempts while the database is unreachable


@dataclass(frozen=True)
class SinkSettings:
    db: str = db.DEFAULT_DB
    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    tls: bool = False
    prefix: str = "punchgate"
    group: str = "punchgate-sink"
    client_id: str = "punchgate-sink"
    session_expiry: int = 7 * 86400  # seconds the broker keeps our session (and queue) while we are away
    keepalive: int = 30
    max_messages: int = 200  # per flush (one transaction)
    linger: float = 0.05  # seconds a flush waits for more once the first message arrived
    receive_maximum: int = 400  # MQTT 5: messages the broker may have in flight to us
    confirm: bool = True
    check_interval: float = 30.0  # seconds between re-checks of digest days that did not match
    mismatch_grace: float = 600.0  # a day mismatching for less than this is still being delivered


@dataclass
class SinkStats:
    """Counters for /metrics (monotonic except the gauges marked so)."""

    received: int = 0
    flushes: int = 0
    punches_new: int = 0
    punches_repeated: int = 0
    dead_letters: int = 0
    ignored: int = 0  # empty payloads (a retained message being cleared)
    confirmations: int = 0  # confirmation messages published
    confirmed_ids: int = 0
    db_failures: int = 0
    connects: int = 0
    connected: bool = False  # gauge
    inbox: int = 0  # gauge: received, not committed yet
    mismatching_days: int = 0  # gauge: digest days that differ for longer than the grace
    last_flush_at: float | None = None
    last_db_error: str = ""
    by_kind: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Received:
    topic: str
    payload: bytes
    mid: int
    qos: int
    epoch: int  # the connection it came on: only that connection may acknowledge it


class Sink:
    """Start with `start()`, stop with `stop()`; thread-based, so any caller can drive it."""

    def __init__(self, settings: SinkSettings) -> None:
        self.settings = settings
        self.stats = SinkStats()
        self.validators = Validators()
        self.engine = db.create(settings.db)
        self._inbox: queue.Queue[_Received] = queue.Queue()
        self._epoch = 0
        self._stopping = threading.Event()
        self._writer: threading.Thread | None = None
        self._next_check = 0.0
        self._client = self._make_client()

    # --- MQTT ---------------------------------------------------------------------------------
    def _make_client(self) -> mqtt.Client:
        s = self.settings
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=s.client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            manual_ack=True,
        )
        if s.username is not None:
            client.username_pw_set(s.username, s.password)
        if s.tls or s.ca_file:
            context = ssl.create_default_context(cafile=s.ca_file)
            if s.cert_file and s.key_file:
                context.load_cert_chain(s.cert_file, s.key_file)
            client.tls_set_context(context)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    def subscriptions(self) -> list[tuple[str, SubscribeOptions]]:
        p, g = self.settings.prefix, self.settings.group
        qos1 = SubscribeOptions(qos=1)
        shared = [
            f"$share/{g}/{p}/+/devices/+/punches",
            f"$share/{g}/{p}/+/devices/+/events",
            f"$share/{g}/{p}/+/events",
        ]
        every_sink = [f"{p}/+/state", f"{p}/+/devices/+/state", f"{p}/+/devices/+/digests"]
        return [(topic, qos1) for topic in (*shared, *every_sink)]

    def _on_connect(self, client: mqtt.Client, _u: Any, flags: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            log.warning("sink_connect_refused", reason=str(reason))
            return
        self._epoch += 1
        self.stats.connects += 1
        self.stats.connected = True
        client.subscribe(self.subscriptions())
        log.info(
            "sink_connected", session_present=bool(flags.session_present), client_id=self.settings.client_id
        )

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.stats.connected = False
        if not self._stopping.is_set():
            log.warning("sink_disconnected", reason=str(reason))

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        self.stats.received += 1
        self._inbox.put(
            _Received(message.topic, bytes(message.payload), message.mid, message.qos, self._epoch)
        )

    # --- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        """Migrate the database, connect, and start the writer."""
        db.upgrade(self.engine)
        log.info("sink_database_ready", url=self.engine.url.render_as_string(hide_password=True))
        s = self.settings
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = s.session_expiry
        properties.ReceiveMaximum = s.receive_maximum
        self._client.connect_async(s.host, s.port, s.keepalive, clean_start=False, properties=properties)
        self._client.loop_start()
        self._writer = threading.Thread(target=self._write_loop, name="sink-writer", daemon=True)
        self._writer.start()

    def stop(self, timeout: float = 20.0) -> None:
        """Commit, acknowledge and confirm what arrived, then disconnect (keeping the session)."""
        self._stopping.set()
        if self._writer is not None:
            self._writer.join(timeout)
        self._client.disconnect()
        self._client.loop_stop()
        self.engine.dispose()
        log.info("sink_stopped", punches_new=self.stats.punches_new, dead_letters=self.stats.dead_letters)

    def writer_alive(self) -> bool:
        return self._writer is not None and self._writer.is_alive()

    # --- the writer ---------------------------------------------------------------------------
    def _take(self) -> list[_Received]:
        try:
            first = self._inbox.get(timeout=0.2)
        except queue.Empty:
            return []
        taken = [first]
        deadline = time.monotonic() + self.settings.linger
        while len(taken) < self.settings.max_messages:
            try:
                taken.append(self._inbox.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
        return taken

    def _write_loop(self) -> None:
        while True:
            batch = self._take()
            self.stats.inbox = self._inbox.qsize()
            if not batch:
                if self._stopping.is_set():
                    return
                self._maybe_recheck()
                continue
            written = self._commit(batch)
            if written is None:  # stopping while the database is down: nothing acknowledged
                return
            self._acknowledge(batch)
            self._confirm(written.confirm)
            self.stats.flushes += 1
            self.stats.punches_new += written.punches_new
            self.stats.punches_repeated += written.punches_repeated
            self.stats.dead_letters += written.dead_letters
            self.stats.last_flush_at = time.time()
            if written.digests_changed:
                self._next_check = 0.0
            self._maybe_recheck()

    def classify(self, topic: str, payload: bytes) -> db.Item | None:
        """What a message is, validated; a DeadLetter when it is not valid; None when empty."""
        if not payload:
            return None
        prefix = self.settings.prefix + "/"
        parts = topic[len(prefix) :].split("/") if topic.startswith(prefix) else []
        try:
            if len(parts) == 4 and parts[1] == "devices":
                gateway, device, kind = parts[0], parts[2], parts[3]
                return self._device_item(topic, gateway, device, kind, payload)
            if len(parts) == 2 and parts[1] in ("state", "events"):
                gateway = parts[0]
                if parts[1] == "state":
                    return db.GatewayState(gateway, self.validators.check("gateway-state", payload))
                data = self.validators.check("device-event", payload)
                return db.Event(gateway, data)
        except Invalid as exc:
            return db.DeadLetter(topic, payload, exc.reason)
        return db.DeadLetter(topic, payload, "not a topic of the punch stream")

    def _device_item(self, topic: str, gateway: str, device: str, kind: str, payload: bytes) -> db.Item:
        if kind == "punches":
            batch = self.validators.check("punch-batch", payload)
            if (batch["gateway"], batch["device"]) != (gateway, device):
                raise Invalid(
                    f"the topic names {gateway}/{device}, the batch {batch['gateway']}/{batch['device']}"
                )
            base = topic.rsplit("/devices/", 1)[0]
            return db.PunchBatch(base, gateway, device, batch["seq"], batch["records"])
        if kind == "state":
            data = self.validators.check("device-state", payload)
            if data["device"] != device:
                raise Invalid(f"the topic names device {device}, the state {data['device']}")
            return db.DeviceState(gateway, device, data)
        if kind == "events":
            data = self.validators.check("device-event", payload)
            return db.Event(gateway, {**data, "device": data.get("device") or device})
        if kind == "digests":
            data = self.validators.check("device-digests", payload)
            if (data["gateway"], data["device"]) != (gateway, device):
                raise Invalid(
                    f"the topic names {gateway}/{device}, the digests {data['gateway']}/{data['device']}"
                )
            return db.Digests(gateway, data)
        raise Invalid("not a topic of the punch stream")

    def _items(self, batch: list[_Received]) -> list[tuple[_Received, db.Item]]:
        out = []
        for message in batch:
            item = self.classify(message.topic, message.payload)
            if item is None:
                self.stats.ignored += 1
                continue
            kind = type(item).__name__
            self.stats.by_kind[kind] = self.stats.by_kind.get(kind, 0) + 1
            if isinstance(item, db.DeadLetter):
                log.warning("sink_dead_letter", topic=message.topic, reason=item.reason)
            out.append((message, item))
        return out

    def _commit(self, batch: list[_Received]) -> db.Written | None:
        """Write the flush in one transaction; retried while the database is unreachable,
        split up when it refuses the content. None: stopping before it could be written."""
        pairs = self._items(batch)
        delay = 0.5
        while True:
            try:
                return self._transaction([item for _m, item in pairs])
            except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
                self._db_failed(exc)
            except sa.exc.DBAPIError as exc:
                if exc.connection_invalidated:
                    self._db_failed(exc)
                else:
                    return self._one_by_one(pairs, exc)
            if self._stopping.wait(delay):
                return None
            delay = min(RETRY_MAX, delay * 2)

    def _transaction(self, items: list[db.Item]) -> db.Written:
        now = dt.datetime.now(dt.UTC)
        with self.engine.begin() as conn:
            return db.write(conn, items, now)

    def _db_failed(self, exc: Exception) -> None:
        self.stats.db_failures += 1
        self.stats.last_db_error = str(exc).splitlines()[0][:300]
        log.error("sink_database_unavailable", error=self.stats.last_db_error)

    def _one_by_one(self, pairs: list[tuple[_Received, db.Item]], first: Exception) -> db.Written:
        """The database refused the flush for its content: each message alone, and the one it
        refuses goes to the dead-letter table with the database's reason."""
        log.warning("sink_flush_refused", error=str(first).splitlines()[0][:300], messages=len(pairs))
        total = db.Written()
        for message, item in pairs:
            try:
                written = self._transaction([item])
            except sa.exc.DBAPIError as exc:
                if (
                    isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError)
                    or exc.connection_invalidated
                ):
                    raise
                reason = f"refused by the database: {str(exc.orig or exc).splitlines()[0][:300]}"
                log.warning("sink_dead_letter", topic=message.topic, reason=reason)
                written = self._transaction([db.DeadLetter(message.topic, message.payload, reason)])
            total.punches_new += written.punches_new
            total.punches_repeated += written.punches_repeated
            total.dead_letters += written.dead_letters
            total.digests_changed |= written.digests_changed
            for base, ids in written.confirm.items():
                total.confirm.setdefault(base, []).extend(ids)
        return total

    def _acknowledge(self, batch: list[_Received]) -> None:
        epoch = self._epoch
        for message in batch:
            # A message of an earlier connection comes again on this one (its session): that
            # copy is the one to acknowledge.
            if message.qos > 0 and message.epoch == epoch:
                self._client.ack(message.mid, message.qos)

    def _confirm(self, by_base: dict[str, list[str]]) -> None:
        if not self.settings.confirm:
            return
        for base, ids in by_base.items():
            unique = list(dict.fromkeys(ids))
            for start in range(0, len(unique), CONFIRM_CHUNK):
                chunk = unique[start : start + CONFIRM_CHUNK]
                body = {
                    "schema": CONFIRM_SCHEMA_NAME,
                    "version": 1,
                    "consumer": self.settings.client_id,
                    "ids": chunk,
                }
                self._client.publish(f"{base}/confirm", json.dumps(body, separators=(",", ":")), qos=1)
                self.stats.confirmations += 1
                self.stats.confirmed_ids += len(chunk)

    # --- reconciliation -----------------------------------------------------------------------
    def _maybe_recheck(self) -> None:
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + self.settings.check_interval
        try:
            with self.engine.begin() as conn:
                utc_now = dt.datetime.now(dt.UTC)
                changed = [c for c in db.recheck(conn, utc_now) if not c.ok]
                grace = utc_now - dt.timedelta(seconds=self.settings.mismatch_grace)
                self.stats.mismatching_days = db.mismatching_days(conn, older_than=grace)
        except sa.exc.DBAPIError as exc:
            self._db_failed(exc)
            return
        if self.stats.mismatching_days:
            log.warning(
                "sink_digest_mismatch",
                days=self.stats.mismatching_days,
                first=[f"{c.gateway}/{c.device} {c.day}: {c.status}" for c in changed[:5]],
            )
