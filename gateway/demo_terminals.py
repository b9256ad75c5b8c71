"""The demo's emulated terminals, and the people punching on them.

`DemoTerminals` builds them: three ZK terminals (two TFT over TCP, one of them with the comm
key, one BW over UDP), two Anviz terminals on one pseudo-terminal (an RS485 bus) and a push
terminal (ADMS) that uploads to the gateway's `[push]` listener. Each keeps the wall time of
the zone it is configured in, as a real terminal on site would. `start` gives them a backlog;
`punching` returns the tasks in which people punch at random; `produced` is how many punches
the terminals hold in all, to compare with what central received.

The push terminal is switched on only once the gateway's listener is up (`push_listening` in
its log): a terminal that finds nobody listening waits its ErrorDelay (30 s) to try again.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
import subprocess
from pathlib import Path
from zoneinfo import ZoneInfo

from punchgate.drivers.anviz.emulator import EmulatedTerminal as AnvizEmulator
from punchgate.drivers.anviz.emulator import PtyBus
from punchgate.drivers.zk.emulator import ZkEmulator
from punchgate.drivers.zk_push.emulator import ZkPushEmulator
from punchgate.gateway.demo_config import COMM_KEY, PUSH_SERIAL

PUSH_RATE = 0.5  # punches a second on the push terminal (Poisson; the three ZK ones: about 0.8 together)


def zone_offset(zone: str) -> dt.timedelta:
    """How far the wall clock in `zone` is from this host's local wall clock."""
    here = dt.datetime.now()
    there = dt.datetime.now(ZoneInfo(zone)).replace(tzinfo=None)
    return dt.timedelta(seconds=round((there - here).total_seconds()))


class DemoTerminals:
    """The six emulated terminals (see the module docstring). Build them after logging is set
    up: the emulators bind their loggers when constructed."""

    def __init__(self, push_port: int) -> None:
        # The emulators' clocks read the host's time; shift them so each terminal shows the wall
        # time of the zone it is configured in, as a real terminal on site would.
        berlin, shanghai = zone_offset("Europe/Berlin"), zone_offset("Asia/Shanghai")
        self.zk = {
            "gate-north": ZkEmulator(
                profile="tft", serial_number="DEMO-TFT-0001", transports=("tcp",), clock_offset=berlin
            ),
            "gate-south": ZkEmulator(
                profile="tft",
                serial_number="DEMO-TFT-0002",
                comm_key=COMM_KEY,
                transports=("tcp",),
                clock_offset=berlin,
            ),
            "canteen": ZkEmulator(
                profile="bw", serial_number="DEMO-BW-0003", transports=("udp",), clock_offset=shanghai
            ),
        }
        self.anviz = [
            AnvizEmulator(1, serial_number="DEMO-ANVIZ-0001"),
            AnvizEmulator(2, serial_number="DEMO-ANVIZ-0002"),
        ]
        for terminal in self.anviz:
            terminal.clock_offset = berlin
        self.anviz_bus = PtyBus(self.anviz)
        # The push terminal keeps the time of its zone by itself (the site's zone, Berlin) and
        # punches on its own at PUSH_RATE; it posts each punch as it happens (realtime).
        self.push = ZkPushEmulator(
            f"http://127.0.0.1:{push_port}",
            PUSH_SERIAL,
            records=30,
            days=3,
            users=25,
            timezone="Europe/Berlin",
            encoding="gb18030",
            punch_rate=PUSH_RATE,
        )
        self.pulled = 0  # punches on the pull terminals (the push terminal's log is its own count)

    def produced(self) -> int:
        """Punches on all the terminals, backlog included."""
        return self.pulled + len(self.push.records)

    async def start(self) -> None:
        """A backlog on each pull terminal, their servers and the RS485 bus started."""
        for seed, emulator in enumerate(self.zk.values()):
            emulator.generate_log(records=40, days=3, users=25, seed=seed)
            await emulator.start()
        for terminal in self.anviz:
            terminal.add_history(30)
        self.anviz_bus.start()
        self.pulled = sum(len(e.records) for e in self.zk.values()) + sum(len(t.records) for t in self.anviz)

    def punching(
        self, gateway: subprocess.Popen[bytes], gateway_log: Path, stop: asyncio.Event
    ) -> list[asyncio.Task[None]]:
        """People punching at random on the ZK and Anviz terminals, and the push terminal
        switched on once the gateway listens; cancel the tasks to stop them."""
        return [
            asyncio.create_task(self._punch_zk_at_random(stop)),
            asyncio.create_task(self._punch_anviz_at_random(stop)),
            asyncio.create_task(self._start_push_terminal(gateway, gateway_log, stop)),
        ]

    async def stop(self) -> None:
        for emulator in self.zk.values():
            with contextlib.suppress(Exception):
                await emulator.stop()
        with contextlib.suppress(Exception):
            await self.push.stop()
        self.anviz_bus.stop()

    async def _punch_zk_at_random(self, stop: asyncio.Event) -> None:
        rng = random.Random()
        emulators = list(self.zk.values())
        while not stop.is_set():
            await asyncio.sleep(rng.uniform(0.5, 2.0))
            emulator = rng.choice(emulators)
            emulator.add_punch(
                str(rng.randint(1, 25)), state=rng.choice((0, 1)), verify=rng.choice((1, 15, 2))
            )
            self.pulled += 1

    async def _punch_anviz_at_random(self, stop: asyncio.Event) -> None:
        rng = random.Random()
        while not stop.is_set():
            await asyncio.sleep(rng.uniform(2.0, 6.0))
            rng.choice(self.anviz).punch(rng.randint(1000, 1019), state=rng.choice((0, 1)), backup_code=0x01)
            self.pulled += 1

    async def _start_push_terminal(
        self, gateway: subprocess.Popen[bytes], gateway_log: Path, stop: asyncio.Event
    ) -> None:
        """Switch the push terminal on once the gateway's listener is up (`push_listening` in its
        log): a terminal that finds nobody listening waits its ErrorDelay (30 s) to try again."""
        emulator = self.push
        while not stop.is_set() and gateway.poll() is None:
            with contextlib.suppress(OSError):
                if '"push_listening"' in await asyncio.to_thread(gateway_log.read_text, errors="replace"):
                    await emulator.start()
                    # Someone clocks in once the terminal has uploaded its backlog, so the demo
                    # always shows a punch pushed as it happens, whatever the random rate does.
                    while not stop.is_set() and emulator.counters.uploads == 0:
                        await asyncio.sleep(0.2)
                    if not stop.is_set():
                        emulator.punch(next(iter(emulator.users), "1"))
                    return
            await asyncio.sleep(0.2)
