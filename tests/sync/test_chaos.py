"""Never lose a punch: broker crashes during a drain, and the gateway itself killed with SIGKILL."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from punchgate.sync.forwarder import Forwarder
from tests.support.broker import Broker, Gate
from tests.support.config import write_config
from tests.support.factories import interleaved
from tests.support.gateway import GatewayProcess
from tests.support.subscriber import Subscriber
from tests.support.waiting import wait_until_async
from tests.sync.helpers import GATEWAY_ID, make_settings, open_store, running

DEVICES = ["door-1", "door-2", "gate-a", "gate-b"]


@pytest.mark.slow
async def test_broker_killed_three_times_during_drain_loses_nothing(
    tmp_path: Path, broker: Broker, subscriber_factory: Callable[..., Subscriber]
) -> None:
    # The subscriber takes QoS 0: a broker without persistence that is SIGKILLed loses whatever
    # it still holds for a subscriber (QoS 1 messages beyond the subscriber's in-flight window,
    # and unread bytes when the dying broker resets a connection that sent it PUBACKs). That
    # would be the broker's loss, not the gateway's; with QoS 0 the broker hands every message
    # to the subscriber's socket at once, so the subscriber sees what the broker accepted.
    subscriber = subscriber_factory(broker.host, broker.port, qos=0)
    punches = list(interleaved(DEVICES, 12_500))  # 50,000
    expected = {p.id for p in punches}
    # Small batches make the drain long enough to crash the broker in the middle of it.
    gate = Gate(broker.host, broker.port)
    await gate.open()
    settings = make_settings(tmp_path, gate.port, batch_size=20, reconnect_min=0.1, reconnect_max=0.5)
    store = open_store(settings)
    store.add_punches(punches)
    forwarder = Forwarder(settings, store, version="1.0")
    rec = subscriber.reconciler
    pending_at_kill: list[int] = []

    def received(count: int) -> Callable[[], bool]:
        return lambda: len(rec.seen) >= count

    try:
        async with running(forwarder):
            for crash in range(1, 4):
                threshold = crash * 10_000
                await wait_until_async(
                    received(threshold), timeout=120, message=f"{threshold} punches received"
                )
                await asyncio.to_thread(broker.kill)
                await gate.close()  # hold the gateway off until the subscriber is back
                pending_at_kill.append(store.pending_count())
                await asyncio.to_thread(broker.start)
                await asyncio.to_thread(subscriber.wait_subscribed, crash + 1, timeout=30)
                await gate.open()
            await wait_until_async(lambda: store.pending_count() == 0, timeout=180, message="drained")
            # Everything is acknowledged; what has not arrived within a grace period is lost.
            assert await asyncio.to_thread(subscriber.wait_records, len(expected), timeout=15), (
                f"{len(rec.missing(expected))} punches acknowledged but never received"
            )
    finally:
        await gate.close()
    # Each crash really happened mid-drain.
    assert all(pending > 0 for pending in pending_at_kill), pending_at_kill
    assert broker.starts == 4
    assert forwarder.stats.reconnects >= 3
    assert rec.missing(expected) == set()
    assert store.delivered_ids() == expected
    # Duplicates are allowed (ids make them harmless), counted, and bounded by what the
    # forwarder knew it might be resending.
    print(f"\nduplicates at the subscriber: {rec.duplicates}; forwarder's possible duplicates: "
          f"{forwarder.stats.possible_duplicates}; reconnects: {forwarder.stats.reconnects}")  # fmt: skip
    assert rec.duplicates <= forwarder.stats.possible_duplicates
    assert subscriber.bad_payloads == []
    store.close()


@pytest.mark.slow
async def test_gateway_sigkilled_during_drain_loses_nothing(
    tmp_path: Path, broker: Broker, subscriber_factory: Callable[..., Subscriber]
) -> None:
    subscriber = subscriber_factory(broker.host, broker.port)
    settings = make_settings(tmp_path, broker.port)
    store = open_store(settings)
    punches = list(interleaved(DEVICES, 10_000))  # 40,000, buffered before the gateway starts
    expected = {p.id for p in punches}
    store.add_punches(punches)
    store.close()
    config = write_config(
        tmp_path / "gateway.toml",
        gateway_id=GATEWAY_ID,
        broker_port=broker.port,
        buffer_path=tmp_path / "buffer.db",
        mqtt={"batch_size": 20, "reconnect_min": 0.2, "reconnect_max": 1.0},
    )
    rec = subscriber.reconciler

    with GatewayProcess(config) as gateway:
        await gateway.wait_until_async(lambda: len(rec.seen) >= 5_000, timeout=120, message="5,000 punches")
        await asyncio.to_thread(gateway.kill)  # no clean shutdown, no chance to mark anything
        seen_at_kill = len(rec.seen)
        assert seen_at_kill < len(expected), "the drain finished before the kill; nothing was tested"
        store = open_store(settings)  # the file is consistent after a SIGKILL (WAL recovery)
        pending_after_kill = store.pending_count()
        assert pending_after_kill > 0
        store.close()

        gateway.start()
        assert await asyncio.to_thread(subscriber.wait_records, len(expected), timeout=180), (
            gateway.log_tail()
        )
    store = open_store(settings)
    try:
        assert rec.missing(expected) == set()
        assert store.pending_count() == 0
        assert store.delivered_ids() == expected
        print(f"\nseen at kill: {seen_at_kill}, pending after kill: {pending_after_kill}, "
              f"duplicates after restart: {rec.duplicates}")  # fmt: skip
    finally:
        store.close()
