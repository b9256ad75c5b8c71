"""Push terminals in the chaos harness (`python -m bench.chaos --push-terminals N`).

Each is the push-terminal emulator (`punchgate.drivers.zk_push.emulator`) uploading to the
gateway's `[push]` listener: a backlog of `backlog` records at start (parts of 500 lines, so
they are staged and moved: gateway/staged_mover.py), then the real-time punches the harness
gives it in its turn. The gateway's SIGKILLs and the broker's crashes hit them like the pulled
terminals; a terminal that gets no answer keeps its records and uploads them again after its
short ErrorDelay, so every record it holds must reach the subscriber.
"""

from __future__ import annotations

import contextlib
from typing import Any

from punchgate.drivers.zk_push.emulator import ZkPushEmulator
from punchgate.gateway.mosquitto import free_port
from tests.support.zk_push import push_expected_ids

ZONE = "Asia/Shanghai"
ERROR_DELAY = 0.5  # seconds a terminal waits after a failed upload (the firmware's is 30 s or more)


class PushTerminals:
    """`count` emulated push terminals and the listener port the gateway gives them."""

    def __init__(self, count: int, *, backlog: int, seed: int) -> None:
        self.port = free_port()
        self.emulators = {
            f"p{n:02d}-push": ZkPushEmulator(
                f"http://127.0.0.1:{self.port}",
                f"CHAOSPUSH{n:05d}",
                records=backlog,
                days=5,
                users=300,
                timezone=ZONE,
                seed=seed + n,
                delay=2.0,
                error_delay=ERROR_DELAY,
                request_timeout=10.0,
            )
            for n in range(1, count + 1)
        }

    def config(self) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
        """(their terminal entries, the `[push]` section) for the gateway's config."""
        terminals = [
            {"type": "zk-push", "name": name, "serial_number": emulator.sn, "timezone": ZONE}
            for name, emulator in self.emulators.items()
        ]
        return terminals, ({"push": {"bind": "127.0.0.1", "port": self.port}} if terminals else {})

    async def start(self) -> None:
        for emulator in self.emulators.values():
            await emulator.start()

    async def stop(self) -> None:
        for emulator in self.emulators.values():
            with contextlib.suppress(Exception):
                await emulator.stop()

    def expected_ids(self) -> set[str]:
        """The record id of every punch the terminals hold (uploaded or not)."""
        return set().union(*(push_expected_ids(emulator) for emulator in self.emulators.values()))
