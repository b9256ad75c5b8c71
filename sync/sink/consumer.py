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

This module is the MQTT side and the writer thread's loop; the parts it drives: `inbox` (what
arrived), `classify` (what it is), `commit` (the transaction, its retries and splits), `recheck`
(the periodic reconciliation), `resend` (asking gateways for days missing punches), `settings`
and `stats`.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from punchgate.sync.contract import CONFIRM_SCHEMA_NAME
from punchgate.sync.sink.classify import classify
from punchgate.sync.sink.commit import RETRY_MAX, Committer
from punchgate.sync.sink.engine import create, upgrade
from punchgate.sync.sink.inbox import Inbox, Received
from punchgate.sync.sink.items import DeadLetter, Item, Written
from punchgate.sync.sink.recheck import Rechecks
from punchgate.sync.sink.resend import ResendRequests
from punchgate.sync.sink.settings import SinkSettings
from punchgate.sync.sink.stats import SinkStats
from punchgate.sync.sink.validate import Validators

__all__ = ["CONFIRM_CHUNK", "RETRY_MAX", "Sink", "SinkSettings", "SinkStats"]

log = structlog.get_logger(__name__)

CONFIRM_CHUNK = 5000  # ids per confirmation message

_Received = Received  # the name a received message had here before the inbox got its module


class Sink:
    """Start with `start()`, stop with `stop()`; thread-based, so any caller can drive it."""

    def __init__(self, settings: SinkSettings) -> None:
        self.settings = settings
        self.stats = SinkStats()
        self.validators = Validators()
        self.engine = create(settings.db)
        self._inbox = Inbox()
        self._epoch = 0
        self._stopping = threading.Event()
        self._writer: threading.Thread | None = None
        self._database_ready = False
        self._committer = Committer(self.engine, self.stats, self._stopping)
        self._client = self._make_client()
        self._resends = ResendRequests(settings, self.stats, self._publish_request)
        self._rechecks = Rechecks(self.engine, settings, self.stats, self._resends)

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

    def _publish_request(self, topic: str, payload: str) -> None:
        """A command request to a gateway (QoS 1; paho queues it while the broker is away)."""
        self._client.publish(topic, payload, qos=1)

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
            Received(message.topic, bytes(message.payload), message.mid, message.qos, self._epoch)
        )

    # --- lifecycle ----------------------------------------------------------------------------
    def prepare_database(self) -> None:
        """Migrate the database (raises `sqlalchemy.exc.OperationalError` while it is unreachable)."""
        upgrade(self.engine)
        self._database_ready = True
        self.stats.waiting_for_database = False
        log.info("sink_database_ready", url=self.engine.url.render_as_string(hide_password=True))

    def start(self) -> None:
        """Migrate the database (unless `prepare_database` did), connect, and start the writer."""
        if not self._database_ready:
            self.prepare_database()
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
    def _write_loop(self) -> None:
        while True:
            batch = self._inbox.take(self.settings.max_messages, self.settings.linger)
            self.stats.inbox = self._inbox.size()
            if not batch:
                if self._stopping.is_set():
                    return
                self._rechecks.maybe_recheck()
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
                self._rechecks.soon()
            self._rechecks.maybe_recheck()

    def classify(self, topic: str, payload: bytes) -> Item | None:
        """What a message is, validated; a DeadLetter when it is not valid; None when empty."""
        return classify(topic, payload, prefix=self.settings.prefix, validators=self.validators)

    def _items(self, batch: list[Received]) -> list[tuple[Received, Item]]:
        out = []
        for message in batch:
            item = self.classify(message.topic, message.payload)
            if item is None:
                self.stats.ignored += 1
                continue
            kind = type(item).__name__
            self.stats.by_kind[kind] = self.stats.by_kind.get(kind, 0) + 1
            if isinstance(item, DeadLetter):
                log.warning("sink_dead_letter", topic=message.topic, reason=item.reason)
            out.append((message, item))
        return out

    def _commit(self, batch: list[Received]) -> Written | None:
        """Write the flush in one transaction (`commit.Committer`). None: stopping before it
        could be written."""
        return self._committer.commit(self._items(batch))

    def _acknowledge(self, batch: list[Received]) -> None:
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
