"""The daemon with hostile ZK terminals beside a good one, end to end over a real broker: the good
terminal's punches arrive, each hostile one is reported with its reason and retried, the
process stays small, and it stops silently while a call to an abandoned terminal is in flight.

Before the fix, stopping the daemon while it waited on a UDP terminal that never answers
logged "Future exception was never retrieved ... UnreachableError ... Bad file descriptor"
after gateway_stopped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from punchgate.drivers.zk import protocol as zp
from punchgate.drivers.zk.emulator import ZkEmulator
from tests.hostile import fake_zk as fake
from tests.support.config import zk_terminal
from tests.support.gateway import GatewayProcess
from tests.support.subscriber import Subscriber
from tests.support.zk import expected_ids

MAX_PEAK_RSS_MB = 200  # the whole daemon; before the fix one endless terminal took gigabytes


def silence(terminal: fake.FakeTerminal, packet: zp.ZkPacket, tcp: bool) -> list[fake.Step] | None:
    return []  # hears everything, answers nothing


def reasons(gateway: GatewayProcess) -> dict[str, str]:
    """The last failure logged per terminal."""
    return {str(e.get("device")): str(e.get("error")) for e in gateway.events("session_failed")}


async def test_hostile_terminals_beside_a_good_one(
    gateway_factory: Callable[..., GatewayProcess], subscriber: Subscriber
) -> None:
    good = ZkEmulator(profile="tft", serial_number="GOOD0000002", transports=("tcp",))
    good.generate_log(records=300, days=3, users=10, seed=5)
    await good.start()
    endless = fake.FakeTerminal(attack=fake.endless_data)
    claimed = fake.FakeTerminal(attack=fake.claimed_count())
    huge = fake.FakeTerminal(attack=fake.huge_envelope)
    silent = fake.FakeTerminal(attack=silence)
    try:
        with (
            fake.serve(endless, "udp") as endless_peer,
            fake.serve(claimed, "tcp") as claimed_peer,
            fake.serve(huge, "tcp") as huge_peer,
            fake.serve(silent, "udp") as silent_peer,
        ):
            gateway = gateway_factory(
                [
                    zk_terminal("good", good, live=False, poll_interval=30),
                    zk_terminal("endless", endless_peer.port, transport="udp", timeout=1, live=False),
                    zk_terminal("claimed", claimed_peer.port, timeout=1, live=False),
                    zk_terminal("huge", huge_peer.port, timeout=1, live=False),
                    # a long timeout: its connect is still waiting when the daemon stops
                    zk_terminal("silent", silent_peer.port, transport="udp", timeout=60),
                ]
            )
            gateway.start()
            assert not await subscriber.missing_after(set(expected_ids(good)), timeout=60)
            await gateway.wait_until_async(
                lambda: {"endless", "claimed", "huge"} <= set(reasons(gateway)),
                timeout=30,
                message="a failed session of each hostile terminal",
            )
            await gateway.wait_until_async(
                lambda: sum(p.command == zp.CMD_CONNECT for p in endless.received) >= 2,
                timeout=30,
                message="the endless terminal retried",
            )
            # Waited for, not asserted at once: its first contact has its own place in the
            # start-up spread, and on a loaded host the other waits can end before it.
            await gateway.wait_until_async(
                lambda: bool(silent.received), timeout=30, message="the silent terminal's connect in flight"
            )
            peak = gateway.peak_rss_mb()
            code = await asyncio.to_thread(gateway.stop)
    finally:
        await good.stop()
    found = reasons(gateway)
    assert "endless data: the terminal sent more than" in found["endless"]
    assert "claimed count beyond capacity: the terminal claims 2147483647 records" in found["claimed"]
    assert "oversized reply: the terminal announced a 2147483648-byte packet" in found["huge"]
    assert "silent" not in found  # still connecting when the daemon stopped: nothing failed
    assert code == 0
    assert peak < MAX_PEAK_RSS_MB, f"the daemon peaked at {peak:.0f} MB"
    log = gateway.log_text()
    assert "never retrieved" not in log and "Traceback" not in log, gateway.log_tail()
    tail = log.split('"event": "gateway_stopped"', 1)[1].splitlines()[1:]
    assert not [line for line in tail if line.strip()], tail
