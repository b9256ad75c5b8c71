"""The forwarder against a real mosquitto and a real reconciling subscriber."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path

from punchgate.sync.forwarder import Forwarder
from tests.support.broker import Broker, Gate
from tests.support.factories import interleaved, make_punch, make_punches
from tests.support.subscriber import Subscriber
from tests.support.waiting import wait_for_async
from tests.sync.helpers import GATEWAY_ID, make_settings, open_store, running

DEVICES = ["door-1", "door-2", "canteen"]


async def test_drains_backlog_in_order_per_device(
    tmp_path: Path, broker: Broker, subscriber: Subscriber
) -> None:
    settings = make_settings(tmp_path, broker.port, batch_size=100)
    store = open_store(settings)
    punches = list(interleaved(DEVICES, 700))
    store.add_punches(punches)
    forwarder = Forwarder(settings, store, version="1.2.3")
    async with running(forwarder):
        assert await wait_for_async(lambda: store.pending_count() == 0, timeout=30)
        assert await asyncio.to_thread(subscriber.wait_records, len(punches), timeout=30)
    rec = subscriber.reconciler
    for device in DEVICES:
        assert rec.in_order(device, [p.id for p in punches if p.device == device])
        # Batch numbers strictly increase per device.
        assert rec.seqs[device] == sorted(set(rec.seqs[device]))
    assert rec.duplicates == 0
    assert max(len(m.json()["records"]) for m in subscriber.on("/punches")) == 100
    assert forwarder.stats.punches_published == len(punches)
    assert store.delivered_ids() == {p.id for p in punches}
    store.close()


async def test_broker_down_at_start(
    tmp_path: Path, broker_factory: Callable[..., Broker], subscriber_factory: Callable[..., Subscriber]
) -> None:
    """Punches buffer while the broker is down; once it is up they all arrive, in order per device."""
    broker = broker_factory()  # not started
    gate = Gate(broker.host, broker.port)  # closed: the gateway is held off until we open it
    settings = make_settings(tmp_path, gate.port, batch_size=250)
    store = open_store(settings)
    first = list(interleaved(DEVICES, 400))
    store.add_punches(first)
    forwarder = Forwarder(settings, store, version="1.0")
    try:
        async with running(forwarder):
            # Punches keep arriving while nothing is reachable.
            await wait_for_async(lambda: forwarder.stats.connect_failures >= 2, timeout=20)
            later = [make_punch(d, n) for n in range(400, 600) for d in DEVICES]
            store.add_punches(later)
            forwarder.notify_new_punches()
            assert forwarder.stats.connect_failures >= 2
            assert not forwarder.connected
            assert store.pending_count() == len(first) + len(later)

            await asyncio.to_thread(broker.start)
            # The subscriber must be listening before the gateway gets through (a broker without
            # persistence keeps nothing for subscribers that are not there yet).
            sub = subscriber_factory(broker.host, broker.port)
            await gate.open()
            assert await wait_for_async(lambda: forwarder.connected, timeout=20)
            expected = first + later
            assert await asyncio.to_thread(sub.wait_records, len(expected), timeout=60)
            assert await wait_for_async(lambda: store.pending_count() == 0, timeout=20)
        for device in DEVICES:
            assert sub.reconciler.in_order(device, [p.id for p in expected if p.device == device])
        assert sub.reconciler.duplicates == 0
    finally:
        await gate.close()
        store.close()


async def test_live_punch_goes_out_alone_and_at_once(
    tmp_path: Path, broker: Broker, subscriber: Subscriber
) -> None:
    settings = make_settings(tmp_path, broker.port, batch_size=500)
    store = open_store(settings)
    forwarder = Forwarder(settings, store, version="1.0")
    async with running(forwarder):
        assert await wait_for_async(lambda: forwarder.connected, timeout=20)
        await asyncio.sleep(0.3)  # the drain is now idle, waiting for a wake-up
        live = [make_punch("door-1", n, source="live") for n in range(3)]
        for punch in live:
            store.add_punches([punch])
            forwarder.notify_new_punches()
        # Well under the idle poll: the notification, not a timer, sent them.
        assert await asyncio.to_thread(subscriber.wait_records, 3, timeout=2.0)
    batches = [m.json() for m in subscriber.on("/punches")]
    assert [len(b["records"]) for b in batches] == [1, 1, 1]
    assert [b["records"][0]["id"] for b in batches] == [p.id for p in live]
    assert all(b["records"][0]["source"] == "live" and not b["records"][0]["historical"] for b in batches)
    store.close()


async def test_gateway_state_online_retained_and_will_offline(
    tmp_path: Path, broker: Broker, subscriber_factory: Callable[..., Subscriber]
) -> None:
    settings = make_settings(tmp_path, broker.port)
    store = open_store(settings)
    forwarder = Forwarder(settings, store, version="9.9.9")
    async with running(forwarder):
        assert await wait_for_async(lambda: forwarder.connected, timeout=20)
        # A subscriber arriving later gets the retained online state.
        late = subscriber_factory(broker.host, broker.port, f"punchgate/{GATEWAY_ID}/state")
        assert await asyncio.to_thread(late.wait_for, lambda: bool(late.messages), timeout=10)
        state = late.messages[0]
        assert state.retain
        assert state.json()["state"] == "online"
        assert state.json()["version"] == "9.9.9"
    # Clean shutdown publishes offline itself (a clean disconnect suppresses the will).
    assert await asyncio.to_thread(
        late.wait_for, lambda: late.messages[-1].json() == {"state": "offline"}, timeout=10
    )
    store.close()


async def test_will_marks_gateway_offline_when_connection_dies(
    tmp_path: Path, broker: Broker, subscriber_factory: Callable[..., Subscriber]
) -> None:
    gate = Gate(broker.host, broker.port)
    await gate.open()
    settings = make_settings(tmp_path, gate.port, keepalive=5)
    store = open_store(settings)
    forwarder = Forwarder(settings, store, version="1.0")
    watcher = subscriber_factory(broker.host, broker.port, f"punchgate/{GATEWAY_ID}/state")
    try:
        async with running(forwarder):
            assert await wait_for_async(lambda: forwarder.connected, timeout=20)
            assert await asyncio.to_thread(watcher.wait_for, lambda: bool(watcher.messages), timeout=10)
            await gate.close()  # the network between gateway and broker is cut
            # The broker notices the dead connection and publishes the last will.
            assert await asyncio.to_thread(
                watcher.wait_for, lambda: watcher.messages[-1].json() == {"state": "offline"}, timeout=20
            )
            assert await wait_for_async(lambda: not forwarder.connected, timeout=20)
    finally:
        await gate.close()
        store.close()


async def test_device_state_retained_and_republished_after_reconnect(
    tmp_path: Path, broker: Broker, subscriber: Subscriber
) -> None:
    from punchgate.sync.contract import DeviceEvent, DeviceState

    settings = make_settings(tmp_path, broker.port)
    store = open_store(settings)
    forwarder = Forwarder(settings, store, version="1.0")
    state = DeviceState(
        device="door-1",
        state="online",
        faults=[],
        last_contact=None,
        clock_drift_seconds=0.5,
        serial_number="SN1",
    )
    forwarder.publish_device_state("door-1", state)  # before the connection: kept, sent on connect
    async with running(forwarder):
        assert await asyncio.to_thread(
            subscriber.wait_for, lambda: bool(subscriber.on("/devices/door-1/state")), timeout=10
        )
        event = DeviceEvent(
            device="door-1",
            event="fault_raised",
            code="clock_drift",
            severity="warning",
            detail="x",
            time=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
        )
        forwarder.publish_event("door-1", event)
        assert await asyncio.to_thread(
            subscriber.wait_for, lambda: bool(subscriber.on("/devices/door-1/events")), timeout=10
        )
        await asyncio.to_thread(broker.kill)
        await asyncio.to_thread(broker.start)
        await asyncio.to_thread(subscriber.wait_subscribed, 2, timeout=20)
        # Retained state went out again on the new connection (the restarted broker had lost it).
        assert await asyncio.to_thread(
            subscriber.wait_for, lambda: len(subscriber.on("/devices/door-1/state")) >= 2, timeout=30
        )
    assert json.loads(subscriber.on("/devices/door-1/state")[-1].payload)["clock_drift_seconds"] == 0.5
    assert forwarder.stats.reconnects >= 1
    store.close()


async def test_more_punches_than_one_read(tmp_path: Path, broker: Broker, subscriber: Subscriber) -> None:
    settings = make_settings(tmp_path, broker.port, batch_size=50)
    store = open_store(settings)
    punches = make_punches("door-1", 5000)
    store.add_punches(punches)
    forwarder = Forwarder(settings, store, version="1.0")
    async with running(forwarder):
        assert await asyncio.to_thread(subscriber.wait_records, len(punches), timeout=60)
        assert await wait_for_async(lambda: store.pending_count() == 0, timeout=20)
    assert subscriber.reconciler.in_order("door-1", [p.id for p in punches])
    store.close()


async def test_unacknowledged_publish_times_out_and_rows_stay_pending(
    tmp_path: Path, broker: Broker, subscriber: Subscriber
) -> None:
    gate = Gate(broker.host, broker.port)
    await gate.open()
    settings = make_settings(tmp_path, gate.port, publish_timeout=1.0, reconnect_min=0.2, reconnect_max=0.5)
    store = open_store(settings)
    forwarder = Forwarder(settings, store, version="1.0")
    punches = make_punches("door-1", 100)
    try:
        async with running(forwarder):
            assert await wait_for_async(lambda: forwarder.connected, timeout=20)
            gate.freeze()  # the TCP connection stays up, but no PUBACK will come back
            store.add_punches(punches)
            forwarder.notify_new_punches()
            assert await wait_for_async(lambda: forwarder.stats.publish_failures >= 1, timeout=20)
            assert store.pending_count() == 100  # nothing marked without a PUBACK
            assert forwarder.stats.possible_duplicates >= 100
            gate.thaw()
            assert await wait_for_async(lambda: store.pending_count() == 0, timeout=30)
            assert await asyncio.to_thread(subscriber.wait_records, 100, timeout=15)
    finally:
        await gate.close()
    assert subscriber.reconciler.missing({p.id for p in punches}) == set()
    assert subscriber.reconciler.duplicates <= forwarder.stats.possible_duplicates
    store.close()
