"""TLS + password against a mosquitto configured for them, the payload contract (schemas, names,
retained states), buffer limits end to end."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
import re
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import jsonschema  # type: ignore[import-untyped]
import pytest

from punchgate.drivers.faults import DeviceFault
from punchgate.drivers.registry import DRIVERS
from punchgate.drivers.zk.emulator import ZkEmulator
from punchgate.gateway import contract_schemas
from punchgate.gateway.faults import Severity
from punchgate.sync import contract
from punchgate.sync.contract import DeviceEvent, DeviceState, Fault
from punchgate.sync.faults import GatewayFault
from punchgate.sync.forwarder import Forwarder
from punchgate.sync.records import FLAG_BEFORE_2000, FLAG_DST_FOLD
from punchgate.sync.store import BufferFullError
from tests.support.broker import Broker, BrokerPki, Gate, make_test_pki
from tests.support.config import zk_terminal
from tests.support.factories import make_punch, make_punches
from tests.support.gateway import GatewayProcess
from tests.support.schemas import ValidationError, Validator, validator
from tests.support.subscriber import Received, Subscriber
from tests.support.waiting import wait_for_async
from tests.sync.helpers import make_settings, open_store, running

DOCS = Path(__file__).resolve().parents[2] / "docs"


@functools.cache
def strict_validator(name: str) -> Validator:
    """docs/schemas/strict/{name}.json: exactly what this release sends."""
    schema = json.loads((contract.STRICT_SCHEMA_DIR / f"{name}.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    return cast(Validator, cls(schema, format_checker=cls.FORMAT_CHECKER))


def validate_gateway_output(name: str, payload: Any) -> None:
    """What the gateway sends must match the strict schema, and so the consumers' one too."""
    strict_validator(name).validate(payload)
    validator(name).validate(payload)


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
            device="door-1", gateway="gw-test", as_of=now, state="degraded", last_contact=now,
            clock_drift_seconds=-3.5, serial_number="SN1",
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
        validate_gateway_output(name, message.json())
        checked[name] = checked.get(name, 0) + 1
    assert set(checked) == {"punch-batch", "device-event", "device-state", "gateway-state"}
    assert checked["punch-batch"] >= 4
    store.close()


def test_checked_in_schemas_match_the_generator(tmp_path: Path) -> None:
    stale = contract_schemas.stale_files()
    assert not stale, f"stale schemas {stale}: run `python -m punchgate.gateway.contract_schemas`"
    assert contract_schemas.main(["--check"]) == 0
    # The check notices a changed, a missing and a left-over file, in either variant.
    contract_schemas.main([str(tmp_path)])
    assert contract_schemas.stale_files(tmp_path) == []
    (tmp_path / "strict" / "device-state.json").write_text("{}\n")
    (tmp_path / "punch-record.json").unlink()
    (tmp_path / "old.json").write_text("{}\n")
    assert contract_schemas.stale_files(tmp_path) == [
        "old.json",
        "punch-record.json",
        "strict/device-state.json",
    ]
    assert contract_schemas.main(["--check", str(tmp_path)]) == 1


def _enum(schema: dict[str, Any], *path: str) -> list[str]:
    node: Any = schema
    for key in path:
        node = node[key]
    options = node.get("anyOf", [node])
    (values,) = [option["enum"] for option in options if "enum" in option]
    return cast(list[str], values)


def test_schema_vocabularies_are_the_code_s_names() -> None:
    """Every name in the stream is an enum in the schemas, generated from where the code defines it."""
    states = {name for d in DRIVERS for name in d.state_names.values()}
    verifies = {name for d in DRIVERS for name in d.verify_names.values()}
    assert states == {"check_in", "check_out", "break_out", "break_in", "overtime_in", "overtime_out"}
    for strict in (False, True):
        folder = contract.STRICT_SCHEMA_DIR if strict else contract.SCHEMA_DIR
        record = json.loads((folder / "punch-record.json").read_text())
        assert set(_enum(record, "$defs", "StateCode", "properties", "name")) == states
        assert set(_enum(record, "$defs", "VerifyCode", "properties", "name")) == verifies
        assert _enum(record, "properties", "flags", "items") == [
            "dst_fold",
            "dst_gap",
            "before_2000",
            "in_future",
        ]
        state = json.loads((folder / "device-state.json").read_text())
        assert _enum(state, "$defs", "Fault", "properties", "code") == list(DeviceFault)
        assert _enum(state, "$defs", "Fault", "properties", "severity") == list(Severity)
        event = json.loads((folder / "device-event.json").read_text())
        assert _enum(event, "properties", "code") == [*DeviceFault, *GatewayFault]
        assert _enum(event, "properties", "severity") == list(Severity)
    # The prose says the same: every name as the wire spells it, none in another spelling.
    text = (DOCS / "mqtt-contract.md").read_text() + (DOCS / "health.md").read_text()
    for name in [*states, *verifies, *DeviceFault, *GatewayFault]:
        assert f"`{name}`" in text, f"{name} is not documented"
    hyphenated = {n.replace("_", "-") for n in states | verifies} - (states | verifies)
    schemas = "".join(p.read_text() for p in contract.SCHEMA_DIR.glob("**/*.json"))
    for spelling in hyphenated:
        assert not re.search(rf"\b{spelling}\b", text + schemas), f"{spelling} is not how the wire spells it"


def _device_state_payload(**changes: Any) -> dict[str, Any]:
    now = dt.datetime(2024, 3, 4, 10, 0, tzinfo=dt.UTC)
    state = DeviceState(
        device="door-1", gateway="gw", as_of=now, state="online", faults=[], last_contact=now,
        clock_drift_seconds=0.4, serial_number="SN1", record_count=10, record_capacity=1000,
    )  # fmt: skip
    return {**state.model_dump(mode="json"), **changes}


def test_consumer_schemas_allow_additions_and_the_strict_ones_do_not() -> None:
    record = json.loads(contract.record_json(make_punch("a", 1)))
    additions: list[tuple[str, dict[str, Any]]] = [
        ("punch-record", {**record, "new_field": 1}),
        ("punch-record", {**record, "verify": {"code": 40, "name": "iris"}}),
        ("punch-record", {**record, "flags": ["clock_reset"]}),
        ("device-state", _device_state_payload(new_field="x")),
        ("device-state", _device_state_payload(faults=[{"code": "tamper", "severity": "warning",
                                                         "detail": "", "since": "2024-03-04T10:00:00Z"}])),
        ("device-event", {"device": "", "event": "fault_raised", "code": "cpu_hot", "severity": "error",
                          "detail": "", "time": "2024-03-04T10:00:00Z"}),
    ]  # fmt: skip
    for name, payload in additions:
        validator(name).validate(payload)
        with pytest.raises(ValidationError):
            strict_validator(name).validate(payload)
    # A state retained by a gateway from before as_of and gateway existed is still valid for consumers.
    old = _device_state_payload()
    del old["as_of"], old["gateway"]
    validator("device-state").validate(old)
    with pytest.raises(ValidationError):
        strict_validator("device-state").validate(old)
    # Closed enumerations stay closed in both: changing them would bump the version.
    for schema in (validator, strict_validator):
        with pytest.raises(ValidationError):
            schema("device-state").validate(_device_state_payload(state="maintenance"))
        with pytest.raises(ValidationError):
            schema("punch-record").validate({**record, "utc_time": "2024-03-04T10:00:00+00:00"})


def test_device_state_changes_and_refresh() -> None:
    now = dt.datetime(2024, 3, 4, 10, 0, tzinfo=dt.UTC)
    base = DeviceState.model_validate(_device_state_payload())

    def later(seconds: float, **changes: Any) -> DeviceState:
        as_of = contract.utc_iso(now + dt.timedelta(seconds=seconds))
        return DeviceState.model_validate(_device_state_payload(as_of=as_of, **changes))

    contact = contract.utc_iso(now + dt.timedelta(seconds=60))
    assert contract.publish_due(None, base)
    quiet = [
        later(60, last_contact=contact),  # contact time only
        later(60, clock_drift_seconds=4.0),  # drift within its band
        later(60, record_count=19),  # fewer than 1 % of the capacity
        later(60, last_error="timed out"),  # not on its own: its fault is what counts
    ]
    for state in quiet:
        assert not contract.publish_due(base, state), state
    fault = {"code": "clock_drift", "severity": "warning", "detail": "x", "since": contact}
    changes = [
        later(60, state="degraded"),
        later(60, faults=[fault]),
        later(60, clock_drift_seconds=5.5),
        later(60, clock_drift_seconds=None),
        later(60, record_count=20),
        later(60, record_capacity=2000),
        later(60, serial_number="SN2"),
        later(60, firmware="Ver 6.61"),
        later(60, user_count=3),
    ]
    for state in changes:
        assert contract.publish_due(base, state), state
    # A fault's wording or age is not a change; another severity is.
    with_fault = later(60, faults=[fault])
    assert not contract.publish_due(with_fault, later(120, faults=[{**fault, "detail": "y"}]))
    assert contract.publish_due(with_fault, later(120, faults=[{**fault, "severity": "error"}]))
    # Unchanged, it still goes out once the last publish is STATE_REFRESH_SECONDS old.
    assert not contract.publish_due(base, later(contract.STATE_REFRESH_SECONDS - 1))
    assert contract.publish_due(base, later(contract.STATE_REFRESH_SECONDS))


def _host_clock_offset() -> dt.timedelta:
    """The emulator's clock follows the host's local wall time; the gateway is told UTC."""
    gap = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.datetime.now()
    return dt.timedelta(seconds=round(gap.total_seconds()))


async def test_retained_device_state_is_published_on_change_only(
    gateway_factory: Callable[..., GatewayProcess],
    broker: Broker,
    subscriber: Subscriber,
    subscriber_factory: Callable[..., Subscriber],
) -> None:
    """A real daemon polling an emulated terminal every second: polls that only move the contact
    time (and jitter the drift) publish nothing new; a fault does, at once."""
    emulator = ZkEmulator(serial_number="SN-STATE", transports=("tcp",), clock_offset=_host_clock_offset())
    emulator.generate_log(records=30, days=1, users=3, seed=7)
    await emulator.start()
    try:
        gateway = gateway_factory(
            [zk_terminal("door-1", emulator, poll_interval=1, live=False, timeout=2)], timezone="UTC"
        )
        gateway.start()

        def states() -> list[Received]:
            return subscriber.on("/gw-test/devices/door-1/state")

        await gateway.wait_until_async(lambda: states(), timeout=30, message="the first device state")

        def polls() -> int:  # a poll that finds the count unchanged reads nothing (poll_counted)
            reads = len(gateway.events("full_read")) + len(gateway.events("tail_read"))
            return reads + len(gateway.events("poll_counted"))

        done = polls()
        await gateway.wait_until_async(lambda: polls() >= done + 3, timeout=30, message="three more polls")
        (first,) = [m.json() for m in states()]
        assert (first["state"], first["faults"], first["gateway"]) == ("online", [], "gw-test")
        assert first["record_count"] == 30
        validate_gateway_output("device-state", first)
        await emulator.set_fault("hang")  # the open session stops answering
        await gateway.wait_until_async(
            lambda: any(m.json()["faults"] for m in states()), timeout=30, message="a state with the fault"
        )
        second = states()[1].json()
        assert second["state"] == "degraded"
        assert [f["code"] for f in second["faults"]] == ["timeout"]
        # The contact time did move in between, and went out only with the fault.
        assert second["last_contact"] > first["last_contact"] and second["as_of"] > first["as_of"]
        assert len(states()) == 2
        validate_gateway_output("device-state", second)
        # It is the retained one: a consumer subscribing only now gets it from the broker.
        late = subscriber_factory(broker.host, broker.port, "punchgate/gw-test/devices/door-1/state")
        assert await asyncio.to_thread(late.wait_for, lambda: bool(late.messages), timeout=10)
        assert late.messages[0].retain
        assert late.messages[0].json() in [m.json() for m in states()[1:]]  # (offline may follow)
    finally:
        await emulator.stop()


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
