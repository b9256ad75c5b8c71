"""The forwarder against a real mosquitto and a real reconciling subscriber."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from punchgate.gateway.settings import Settings
from punchgate.sync import forwarder_drain
from punchgate.sync.forwarder import Forwarder
from punchgate.sync.store import Store
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
    tmp_path: Path, broker: Broker, subscriber: Subscriber, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No timer can send them: an idle drain wakes only when notified (or when the test is long over).
    monkeypatch.setattr(forwarder_drain, "IDLE_POLL_SECONDS", 3600.0)
    settings = make_settings(tmp_path, broker.port, batch_size=500)
    store = open_store(settings)
    forwarder = Forwarder(settings, store, version="1.0")
    async with running(forwarder):
        assert await wait_for_async(lambda: forwarder.connected, timeout=20)
        live = [make_punch("door-1", n, source="live") for n in range(3)]
        for punch in live:
            store.add_punches([punch])
            forwarder.notify_new_punches()
        # The notification sent them (the deadline only bounds a failure).
        assert await asyncio.to_thread(subscriber.wait_records, 3, timeout=30)
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
        # A subscriber arriving later gets the retained online state. (Should a session end
        # early, the will's retained "offline" may come first, then "online" again.)
        late = await asyncio.to_thread(
            subscriber_factory, broker.host, broker.port, f"punchgate/{GATEWAY_ID}/state"
        )
        assert await asyncio.to_thread(
            late.wait_for, lambda: any(m.json()["state"] == "online" for m in late.messages), timeout=30
        )
        assert late.messages[0].retain  # what a subscriber gets on subscribing is the retained state
        state = next(m for m in late.messages if m.json()["state"] == "online")
        assert state.json()["version"] == "9.9.9"
    # Clean shutdown publishes offline itself (a clean disconnect suppresses the will).
    assert await asyncio.to_thread(
        late.wait_for, lambda: late.messages[-1].json() == {"state": "offline"}, timeout=30
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
    tmp_path: Path, broker: Broker, subscriber: Subscriber, subscriber_factory: Callable[..., Subscriber]
) -> None:
    """Waits for conditions only: a session may end at any point (even right after connecting)
    and the forwarder reconnects, so nothing here counts on one session or on message counts."""
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
            subscriber.wait_for, lambda: bool(subscriber.on("/devices/door-1/state")), timeout=60
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
            subscriber.wait_for, lambda: bool(subscriber.on("/devices/door-1/events")), timeout=60
        )
        connects = forwarder.stats.connects
        await asyncio.to_thread(broker.kill)
        await asyncio.to_thread(broker.start)
        # The restarted broker has no persistence: it lost the retained state. So whatever a
        # subscriber that arrives only now receives, the forwarder published again after
        # reconnecting (live, or retained if it got there first).
        late = await asyncio.to_thread(subscriber_factory, broker.host, broker.port)
        assert await asyncio.to_thread(
            late.wait_for, lambda: bool(late.on("/devices/door-1/state")), timeout=60
        )
        assert forwarder.stats.connects > connects
    assert late.on("/devices/door-1/state")[-1].json()["clock_drift_seconds"] == 0.5
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


# --- stopping: cancel() ends the forwarder in every phase, whatever the broker does --------------
# At worst the forwarder spends GOODBYE_TIMEOUT + DISCONNECT_TIMEOUT (4 s) leaving; the bound is
# generous so that only a forwarder that ignores cancel() fails it, even on a loaded machine.
STOP_BOUND = 20.0


@contextlib.asynccontextmanager
async def started(forwarder: Forwarder) -> AsyncIterator[asyncio.Task[None]]:
    """The forwarder in a task. Unlike `running`, never waits unbounded for it to end: a
    forwarder that ignores cancel() must fail the test, not hang it."""
    task = asyncio.create_task(forwarder.run())
    try:
        yield task
    finally:
        if not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=STOP_BOUND)


@contextlib.asynccontextmanager
async def forwarder_started(settings: Settings) -> AsyncIterator[tuple[Forwarder, Store, asyncio.Task[None]]]:
    """A buffer for `settings` and its forwarder, in a task as `started` runs it; (forwarder,
    store, task). The buffer is closed at the end."""
    store = open_store(settings)
    forwarder = Forwarder(settings, store, version="1.0")
    try:
        async with started(forwarder) as task:
            yield forwarder, store, task
    finally:
        store.close()


async def assert_stops(task: asyncio.Task[None]) -> None:
    """cancel() the forwarder's task: it must end, by that cancellation, within STOP_BOUND."""
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=STOP_BOUND)
    assert done, f"the forwarder was still running {STOP_BOUND:g} s after cancel()"
    assert task.cancelled(), f"the forwarder ended with {task.exception()!r}, not the cancellation"


async def test_stops_while_connecting_to_a_refusing_broker(tmp_path: Path, broker: Broker) -> None:
    gate = Gate(broker.host, broker.port)  # closed: every connection is refused
    settings = make_settings(tmp_path, gate.port, reconnect_min=0.01, reconnect_max=0.05)
    async with forwarder_started(settings) as (forwarder, _, task):
        # Connecting and backing off in a tight loop: the cancel lands in either.
        assert await wait_for_async(lambda: forwarder.stats.connect_failures >= 3, timeout=60)
        await assert_stops(task)


async def test_stops_while_connecting_to_a_broker_that_drops_the_connection(
    tmp_path: Path, broker_factory: Callable[..., Broker]
) -> None:
    down = broker_factory()  # never started: the gate accepts, finds nothing behind it, hangs up
    gate = Gate(down.host, down.port)
    await gate.open()
    # aiomqtt waits for CONNACK as long as its timeout even when the connection is gone.
    settings = make_settings(tmp_path, gate.port, publish_timeout=120.0)
    try:
        async with forwarder_started(settings) as (_, _, task):
            assert await wait_for_async(lambda: gate.accepted >= 1, timeout=60)
            await assert_stops(task)
    finally:
        await gate.close()


async def test_stops_while_waiting_for_a_connack_that_never_comes(tmp_path: Path, broker: Broker) -> None:
    gate = Gate(broker.host, broker.port)
    await gate.open()
    gate.freeze()  # connections are accepted, but the CONNECT never reaches the broker
    settings = make_settings(tmp_path, gate.port, publish_timeout=120.0)
    try:
        async with forwarder_started(settings) as (forwarder, _, task):
            assert await wait_for_async(lambda: gate.accepted >= 1, timeout=60)
            await assert_stops(task)
        assert forwarder.stats.connects == 0
    finally:
        await gate.close()


async def test_stops_during_the_reconnect_backoff(tmp_path: Path, broker: Broker) -> None:
    gate = Gate(broker.host, broker.port)  # closed
    settings = make_settings(tmp_path, gate.port, reconnect_min=600.0, reconnect_max=600.0)
    async with forwarder_started(settings) as (forwarder, _, task):
        # Nothing is awaited between counting the failure and the backoff's sleep (300-600 s),
        # so once the failure is visible here the forwarder is in that sleep.
        assert await wait_for_async(lambda: forwarder.stats.connect_failures >= 1, timeout=60)
        await assert_stops(task)
    assert forwarder.stats.connect_failures == 1


@pytest.mark.parametrize(
    ("punches", "batch_size"),
    [
        pytest.param(200, 50, id="publishes-in-flight"),
        # A window of big messages fills the socket buffers towards the frozen broker, so not
        # even the DISCONNECT can be written: leaving must not wait for it.
        pytest.param(24_000, 1500, id="socket-buffers-full"),
    ],
)
async def test_stops_mid_publish_with_the_broker_frozen(
    tmp_path: Path, broker: Broker, punches: int, batch_size: int
) -> None:
    gate = Gate(broker.host, broker.port)
    await gate.open()
    # Long timeouts: neither a PUBACK timeout nor paho's keepalive may end the session for us.
    settings = make_settings(tmp_path, gate.port, publish_timeout=120.0, keepalive=600, batch_size=batch_size)
    try:
        async with forwarder_started(settings) as (forwarder, store, task):
            assert await wait_for_async(lambda: forwarder.connected, timeout=60)
            gate.freeze()  # the connection stays up; nothing gets through any more
            await asyncio.to_thread(store.add_punches, make_punches("door-1", punches))
            forwarder.notify_new_punches()
            assert await wait_for_async(lambda: forwarder.in_flight >= 1, timeout=60)
            await assert_stops(task)
            assert store.pending_count() == punches  # nothing was acknowledged, nothing marked
    finally:
        await gate.close()


async def test_a_cancellation_lost_inside_a_publish_neither_wedges_the_session_nor_the_stop(
    tmp_path: Path, broker: Broker, subscriber: Subscriber, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On Python 3.11 aiomqtt's publish can return normally although its task was cancelled:
    `asyncio.wait_for` loses a cancellation that arrives together with the PUBACK, e.g. when one
    read brings the PUBACK and the connection's end. Here every publish behaves that way. The
    session that lost its connection must still end (and the forwarder reconnect), and cancel()
    must still stop the forwarder."""
    from punchgate.sync.contract import DeviceState

    gate = Gate(broker.host, broker.port)
    await gate.open()
    settings = make_settings(tmp_path, gate.port, publish_timeout=3.0, reconnect_min=0.2, reconnect_max=0.5)
    store = open_store(settings)
    forwarder = Forwarder(settings, store, version="1.0")
    make_client = forwarder._client

    def client_losing_cancellations(context: Any) -> aiomqtt.Client:
        client = make_client(context)
        publish = client.publish

        async def publish_to_the_end(*args: Any, **kwargs: Any) -> None:
            attempt = asyncio.ensure_future(publish(*args, **kwargs))
            try:
                await asyncio.shield(attempt)
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await attempt  # and return as if it had never been cancelled

        monkeypatch.setattr(client, "publish", publish_to_the_end)
        return client

    monkeypatch.setattr(forwarder, "_client", client_losing_cancellations)

    def state(drift: float) -> DeviceState:
        return DeviceState(
            device="door-1",
            state="online",
            faults=[],
            last_contact=None,
            clock_drift_seconds=drift,
            serial_number="SN1",
        )

    def latest_drift() -> float | None:
        states = subscriber.on("/devices/door-1/state")
        return states[-1].json()["clock_drift_seconds"] if states else None

    try:
        async with started(forwarder) as task:
            assert await wait_for_async(lambda: forwarder.connected, timeout=60)
            gate.freeze()
            forwarder.publish_device_state("door-1", state(1.0))
            assert await wait_for_async(lambda: forwarder.in_flight >= 1, timeout=60)
            await gate.close()  # the connection dies under the pending publish
            gate.thaw()
            await gate.open()
            assert await wait_for_async(lambda: forwarder.stats.connects >= 2, timeout=60), (
                "the session that lost its connection never ended"
            )
            assert await asyncio.to_thread(subscriber.wait_for, lambda: latest_drift() == 1.0, timeout=60)
            await assert_stops(task)
    finally:
        await gate.close()
        store.close()
