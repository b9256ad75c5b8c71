"""After the broker comes back empty, every terminal's digest is there again: the forwarder
forgets a digest once it is sent (it is not held twice, sync/digests.py), so the digest publisher
writes each terminal's message again from its kept days after every connect. Against a real
mosquitto (no persistence: its restart loses every retained message), the real daemon and an
emulated ZK terminal."""

from __future__ import annotations

from collections.abc import Callable

from punchgate.drivers.zk.emulator import ZkEmulator
from tests.support.broker import Broker
from tests.support.config import zk_terminal
from tests.support.gateway import GatewayProcess
from tests.support.subscriber import Subscriber
from tests.support.waiting import wait_until_async
from tests.support.zk import expected_ids


async def test_digests_are_published_again_after_the_broker_lost_them(
    gateway_factory: Callable[..., GatewayProcess],
    broker: Broker,
    subscriber_factory: Callable[..., Subscriber],
) -> None:
    emulator = ZkEmulator(serial_number="SN-DIGEST", transports=("tcp",))
    emulator.generate_log(records=40, days=3, users=5, seed=3)
    await emulator.start()
    # Read once (an hour's poll interval, no live stream): once its punches are in a digest,
    # nothing changes any more, so a later message can only come from the reconnect.
    gateway = gateway_factory(
        [zk_terminal("door-1", emulator, poll_interval=3600, live=False, timeout=3)],
        mqtt={"digest_interval": 1},
    )
    gateway.start()
    first = subscriber_factory(broker.host, broker.port, "#")

    held = len(set(expected_ids(emulator)))

    def all_held() -> bool:
        return any(sum(d["count"] for d in m.json()["days"]) == held for m in first.on("/door-1/digests"))

    # Waited for without blocking the event loop: the emulated terminal answers on it.
    await wait_until_async(all_held, timeout=60, message=f"a digest of the {held} punches")
    days = first.on("/door-1/digests")[-1].json()["days"]
    first.stop()

    broker.kill()  # no persistence: the retained digest is gone with it
    broker.start()
    again = subscriber_factory(broker.host, broker.port, "#")
    await wait_until_async(lambda: bool(again.on("/door-1/digests")), timeout=60, message="the digest again")
    assert again.on("/door-1/digests")[0].json()["days"] == days
    late = subscriber_factory(broker.host, broker.port, "#")  # and it is retained again
    await wait_until_async(
        lambda: bool(late.on("/door-1/digests")), timeout=60, message="the retained digest"
    )
    assert late.on("/door-1/digests")[0].retain
    gateway.stop()
    await emulator.stop()
