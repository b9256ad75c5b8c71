"""TLS + password against a mosquitto configured for them, payload schemas, buffer limits end to end."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest

from punchgate.sync import contract
from punchgate.sync.contract import DeviceEvent, DeviceState, Fault
from punchgate.sync.forwarder import Forwarder
from punchgate.sync.records import FLAG_BEFORE_2000, FLAG_DST_FOLD
from punchgate.sync.store import BufferFullError
from tests.support.broker import Broker, BrokerPki, Gate, make_test_pki
from tests.support.factories import make_punch, make_punches
from tests.support.schemas import ValidationError, validator
from tests.support.subscriber import Subscriber
from tests.support.waiting import wait_for_async
from tests.sync.helpers import make_settings, open_store, running


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> BrokerPki:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


def _client_tls(pki: BrokerPki) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca_file))
    context.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    return context


def _gateway_tls(pki: BrokerPki) -> dict[str, str]:
    return {"ca_file": str(pki.ca_file), "cert_file": str(pki.client_cert), "key_file": str(pki.client_key)}


async def test_tls_client_certificate_and_password(
    tmp_path: Path,
    pki: BrokerPki,
    broker_factory: Callable[..., Broker],
    subscriber_factory: Callable[..., Subscriber],
) -> None:
    broker = broker_factory(users={"gateway": "s3cret", "central": "c3ntral"}, tls=pki.broker_tls())
    broker.start()
    sub = subscriber_factory(
        broker.host, broker.port, username="central", password="c3ntral", tls_context=_client_tls(pki)
    )
    settings = make_settings(
        tmp_path, broker.port, username="gateway", password="s3cret", tls=_gateway_tls(pki), protocol="5"
    )
    store = open_store(settings)
    punches = make_punches("door-1", 300)
    store.add_punches(punches)
    forwarder = Forwarder(settings, store, version="1.0")
    async with running(forwarder):
        assert await asyncio.to_thread(sub.wait_records, 300, timeout=30)
    assert sub.reconciler.in_order("door-1", [p.id for p in punches])
    assert forwarder.stats.connect_failures == 0
    store.close()


async def test_wrong_password_is_a_clear_error_and_a_retry_not_a_crash(
    tmp_path: Path, pki: BrokerPki, broker_factory: Callable[..., Broker], caplog: pytest.LogCaptureFixture
) -> None:
    import structlog

    broker = broker_factory(users={"gateway": "s3cret"}, tls=pki.broker_tls())
    broker.start()
    settings = make_settings(
        tmp_path,
        broker.port,
        username="gateway",
        password="wrong",
        tls=_gateway_tls(pki),
        reconnect_min=0.2,
        reconnect_max=0.8,
    )
    store = open_store(settings)
    forwarder = Forwarder(settings, store, version="1.0")
    with structlog.testing.capture_logs() as logs:
        async with running(forwarder) as task:
            assert await wait_for_async(lambda: forwarder.stats.connect_failures >= 3, timeout=30)
            assert not task.done()  # still retrying, not crashed
            assert not forwarder.connected
    assert forwarder.stats.last_error.startswith("broker refused the connection: not authorised")
    refusals = [e for e in logs if e["event"] == "mqtt_not_authorised"]
    assert len(refusals) >= 3 and refusals[0]["log_level"] == "error"
    waits = [e["seconds"] for e in logs if e["event"] == "mqtt_reconnect_wait"]
    assert len(waits) >= 3 and all(0.1 <= w <= 0.8 for w in waits)
    store.close()


async def test_untrusted_broker_certificate_is_refused(
    tmp_path: Path, pki: BrokerPki, broker_factory: Callable[..., Broker]
) -> None:
    other = make_test_pki(tmp_path / "other-ca")
    broker = broker_factory(tls=pki.broker_tls(require_certificate=False))
    broker.start()
    settings = make_settings(tmp_path, broker.port, tls={"ca_file": str(other.ca_file)})
    store = open_store(settings)
    forwarder = Forwarder(settings, store, version="1.0")
    async with running(forwarder):
        assert await wait_for_async(lambda: forwarder.stats.connect_failures >= 1, timeout=30)
    assert "certificate verify failed" in forwarder.stats.last_error.lower()
    store.close()


async def test_every_payload_validates_against_the_checked_in_schemas(
    tmp_path: Path, broker: Broker, subscriber: Subscriber
) -> None:
    settings = make_settings(tmp_path, broker.port, batch_size=40, protocol="5")
    store = open_store(settings)
    varied = [
        *make_punches("door-1", 100),
        make_punch("door-1", 500, source="live"),
        make_punch("door-2", 1, flags=(FLAG_DST_FOLD,)),
        make_punch("door-2", 2, flags=(FLAG_BEFORE_2000,), source="manual"),
    ]
    store.add_punches(varied)
    forwarder = Forwarder(settings, store, version="1.0")
    now = dt.datetime(2024, 3, 4, 10, 0, tzinfo=dt.UTC)
    forwarder.publish_device_state(
        "door-1",
        DeviceState(
            device="door-1", state="degraded", last_contact=now, clock_drift_seconds=-3.5, serial_number="SN1",
            faults=[Fault(code="clock_drift", severity="warning", detail="3.5 s", since=now)],
            record_count=10, record_capacity=100000, firmware="Ver 6.60", model="F22",
        ),
    )  # fmt: skip
    forwarder.publish_event(
        "door-1",
        DeviceEvent(
            device="door-1",
            event="fault_raised",
            code="clock_drift",
            severity="warning",
            detail="x",
            time=now,
        ),
    )
    async with running(forwarder):
        assert await asyncio.to_thread(subscriber.wait_records, len(varied), timeout=30)
        assert await asyncio.to_thread(
            subscriber.wait_for, lambda: bool(subscriber.on("/events")), timeout=10
        )
    # After the clean stop the retained state is offline; it must validate too.
    assert await asyncio.to_thread(
        subscriber.wait_for,
        lambda: subscriber.on("gw-test/state")[-1].json()["state"] == "offline",
        timeout=10,
    )
    kinds = {"/punches": "punch-batch", "/events": "device-event"}
    checked: dict[str, int] = {}
    for message in subscriber.messages:
        if message.topic.endswith("/devices/door-1/state"):
            name = "device-state"
        elif message.topic.endswith("gw-test/state"):
            name = "gateway-state"
        else:
            name = kinds[message.topic[message.topic.rindex("/") :]]
        validator(name).validate(message.json())
        checked[name] = checked.get(name, 0) + 1
    assert set(checked) == {"punch-batch", "device-event", "device-state", "gateway-state"}
    assert checked["punch-batch"] >= 4
    store.close()


def test_checked_in_schemas_match_the_models(tmp_path: Path) -> None:
    generated = contract.write_schemas(tmp_path)
    assert sorted(p.name for p in generated) == sorted(p.name for p in contract.SCHEMA_DIR.glob("*.json"))
    for path in generated:
        assert path.read_text() == (contract.SCHEMA_DIR / path.name).read_text(), (
            f"{path.name} is stale: run `python -m punchgate.sync.contract`"
        )


def test_fast_record_json_equals_the_model() -> None:
    for punch in (make_punch("a", 1), make_punch("a", 2, flags=(FLAG_DST_FOLD,), source="live")):
        assert json.loads(contract.record_json(punch)) == contract.punch_to_record(punch).model_dump(
            mode="json"
        )
    records = [contract.record_json(make_punch("a", n)) for n in range(3)]
    envelope = json.loads(contract.batch_json(gateway="gw", device="a", seq=7, records=records))
    batch = contract.PunchBatch.model_validate(envelope)
    assert batch.model_dump(mode="json") == envelope
    assert envelope["schema"] == "punchgate.punches" and envelope["version"] == 1


def test_schema_rejects_a_record_without_id() -> None:
    record = json.loads(contract.record_json(make_punch("a", 1)))
    del record["id"]
    with pytest.raises(ValidationError):
        validator("punch-record").validate(record)


async def test_buffer_full_while_broker_down_then_recovers_when_drained(
    tmp_path: Path, broker: Broker, subscriber: Subscriber
) -> None:
    gate = Gate(broker.host, broker.port)  # closed: the broker is unreachable for the gateway
    settings = make_settings(tmp_path, gate.port, buffer={"max_pending": 1000})
    store = open_store(settings)
    forwarder = Forwarder(settings, store, version="1.0")
    stored = make_punches("door-1", 1000)
    try:
        async with running(forwarder):
            store.add_punches(stored)
            with pytest.raises(BufferFullError, match="limit is 1000"):
                store.add_punches(make_punches("door-1", 10, start=1000))
            assert store.active_faults() == {"buffer_full"}
            assert store.pending_count() == 1000
            await gate.open()
            assert await asyncio.to_thread(subscriber.wait_records, 1000, timeout=30)
            assert await wait_for_async(lambda: store.pending_count() == 0, timeout=20)
            assert store.active_faults() == frozenset()
            more = make_punches("door-1", 10, start=1000)
            assert len(store.add_punches(more)) == 10
            forwarder.notify_new_punches()
            assert await asyncio.to_thread(subscriber.wait_records, 1010, timeout=30)
    finally:
        await gate.close()
    assert subscriber.reconciler.in_order("door-1", [p.id for p in [*stored, *more]])
    store.close()
