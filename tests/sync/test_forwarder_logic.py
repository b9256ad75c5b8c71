"""Pure logic of the forwarder: batch grouping, backoff, error descriptions."""

from __future__ import annotations

import ssl
from pathlib import Path

import aiomqtt
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from punchgate.sync.forwarder import BatchAssembler, Forwarder, describe_error, group_batches
from punchgate.sync.store import PendingRow
from punchgate.sync.topics import Topics
from tests.sync.helpers import make_settings


def row(pk: int, device: str, source: str = "poll") -> PendingRow:
    return PendingRow(pk=pk, device=device, source=source, payload=f'{{"id":"{pk}"}}')


def test_grouping_keeps_order_per_device_and_respects_batch_size() -> None:
    rows = [row(i, "ab"[i % 2]) for i in range(1, 12)]  # a: 2,4,..; b: 1,3,..
    batches = group_batches(rows, 2)
    for device in "ab":
        pks = [r.pk for d, chunk in batches if d == device for r in chunk]
        assert pks == [r.pk for r in rows if r.device == device]
    assert all(len(chunk) <= 2 for _, chunk in batches)
    assert all(all(r.device == d for r in chunk) for d, chunk in batches)


def test_live_row_goes_alone_after_older_rows_of_its_device() -> None:
    rows = [row(1, "a"), row(2, "a"), row(3, "a", "live"), row(4, "a")]
    assert [[r.pk for r in chunk] for _, chunk in group_batches(rows, 10)] == [[1, 2], [3], [4]]


def test_assembler_holds_partials_until_flush() -> None:
    assembler = BatchAssembler(3)
    assert assembler.add([row(1, "a"), row(2, "b"), row(3, "a")]) == []
    full = assembler.add([row(4, "a")])
    assert [[r.pk for r in c] for _, c in full] == [[1, 3, 4]]
    assert [[r.pk for r in c] for _, c in assembler.flush()] == [[2]]
    assert assembler.flush() == []


def test_backoff_grows_exponentially_with_jitter_and_a_cap(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, 1883, reconnect_min=1.0, reconnect_max=8.0)
    forwarder = Forwarder(settings, store=None, version="x")  # type: ignore[arg-type]
    for attempt, ceiling in [(0, 1.0), (1, 2.0), (2, 4.0), (3, 8.0), (10, 8.0), (100, 8.0)]:
        delays = {forwarder._backoff(attempt) for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 1  # jittered, so many gateways do not reconnect in lockstep


def test_error_descriptions_are_operator_readable() -> None:
    refused = MqttConnectError(ReasonCode(PacketTypes.CONNACK, identifier=135))
    assert describe_error(refused).startswith("broker refused the connection: not authorised")
    bad_login = MqttConnectError(ReasonCode(PacketTypes.CONNACK, identifier=134))
    assert describe_error(bad_login).startswith("broker refused the connection: not authorised")
    assert describe_error(ConnectionRefusedError(111, "Connection refused")) == "network: Connection refused"
    assert describe_error(aiomqtt.MqttError("boom")) == "MQTT: boom"
    assert describe_error(ssl.SSLError(1, "bad")).startswith("TLS handshake failed")


def test_topics_are_built_in_one_place() -> None:
    topics = Topics("punchgate", "site-a")
    assert topics.gateway_state == "punchgate/site-a/state"
    assert topics.device_state("door-1") == "punchgate/site-a/devices/door-1/state"
    assert topics.device_punches("door-1") == "punchgate/site-a/devices/door-1/punches"
    assert topics.device_events("door-1") == "punchgate/site-a/devices/door-1/events"
