"""100 requests in flight across 20 emulated ZK terminals, each answered once and by the right
terminal; and the round-trip time of device.info (publish -> final answer at the requester),
p50/p99, printed (run with -s to see it; docs/mqtt-contract.md quotes it).

Two fleets: terminals listening for live punches (the default: a command waits for the live
stream's next idle tick, up to a second) and terminals only polled.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from tests.commands.commander import Commander
from tests.commands.conftest import FAST, sections
from tests.support.config import zk_terminal
from tests.support.gateway import GatewayProcess
from tests.support.measure import percentile

TERMINALS = 20
PER_TERMINAL = 5


async def _fleet_round_trips(
    gateway_factory: Callable[..., GatewayProcess],
    emulators: list[Any],
    central: Commander,
    *,
    live: bool,
) -> tuple[list[float], list[float]]:
    names = [f"t{i:02d}" for i in range(len(emulators))]
    gateway = gateway_factory(
        [
            zk_terminal(name, emulator, poll_interval=60, live=live)
            for name, emulator in zip(names, emulators, strict=True)
        ],
        mqtt=FAST,
        sections=sections(),
    )
    await asyncio.to_thread(gateway.start)
    await gateway.wait_until_async(
        lambda: all(e.session_active for e in emulators), timeout=120, message="every terminal connected"
    )
    await central.alistening()

    # 100 requests in flight at once: 5 per terminal, all published before the first answer.
    burst = [
        (name, central.send("device.info", terminals=[name])) for _ in range(PER_TERMINAL) for name in names
    ]
    for name, request_id in burst:
        answer = await central.afinal(request_id, name, timeout=120)
        assert answer["status"] == "ok", answer.payload
        assert answer["result"]["serial_number"] == emulators[names.index(name)].serial_number
        finals = [a for a in central.answers(request_id) if a["status"] in ("ok", "error", "expired")]
        assert len(finals) == 1
    in_flight = [central.final(rid, name).received - central.sent[rid] for name, rid in burst]

    # One request at a time, round robin over the terminals: the round trip without a queue.
    alone = []
    for round_ in range(2):
        for name in names:
            request_id = central.send(
                "device.info", terminals=[name], request_id=f"rtt-{live}-{round_}-{name}"
            )
            answer = await central.afinal(request_id, name, timeout=60)
            assert answer["status"] == "ok"
            alone.append(answer.received - central.sent[request_id])
    await asyncio.to_thread(gateway.stop)
    return in_flight, alone


def _line(label: str, samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    return (
        f"{label}: n={len(ms)} p50={percentile(ms, 50):.0f} ms p99={percentile(ms, 99):.0f} ms "
        f"max={ms[-1]:.0f} ms"
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "live",
    [
        pytest.param(True, id="live"),  # the default configuration: the short run keeps it
        pytest.param(False, id="polled", marks=pytest.mark.long),
    ],
)
async def test_device_info_round_trip_over_20_terminals(
    gateway_factory: Callable[..., GatewayProcess],
    zk_emulators: Callable[..., Any],
    central: Commander,
    live: bool,
) -> None:
    emulators = await zk_emulators(TERMINALS)
    in_flight, alone = await _fleet_round_trips(gateway_factory, emulators, central, live=live)
    mode = "live" if live else "polled"
    report = [
        _line(f"device.info, {TERMINALS} terminals ({mode}), 100 in flight", in_flight),
        _line(f"device.info, {TERMINALS} terminals ({mode}), one at a time", alone),
    ]
    print("\n" + "\n".join(report))
