"""`punchgate emulate zk …`: run one or many emulated ZK terminals until Ctrl-C.

The gateway CLI attaches `emulate_command`; it can also run alone with `python -m punchgate.drivers.zk.cli`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import signal

import click
import structlog

from punchgate.drivers.description import configure_command_logging
from punchgate.drivers.zk.emulator import PROFILES, ZkEmulator
from punchgate.drivers.zk.emulator.faults import FAULTS

log = structlog.get_logger(__name__)

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|m|min|h|hour)\s*$")
_PER_SECOND = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "hour": 3600.0}


def parse_rate(text: str) -> float:
    """Punches per second from `2/s`, `30/min` or `100/h` (0 turns punching off)."""
    match = _RATE.match(text)
    if not match:
        raise click.BadParameter(f"{text!r}: expected N/s, N/min or N/h, e.g. 2/s")
    return float(match.group(1)) / _PER_SECOND[match.group(2)]


async def _punch_forever(emulator: ZkEmulator, rate: float, users: int, seed: int) -> None:
    """Random users punch at random (Poisson) moments, `rate` per second on average."""
    rng = random.Random(seed)
    while True:
        await asyncio.sleep(rng.expovariate(rate))
        user_id = str(rng.randint(1, users))
        if emulator.data.user_by_id(user_id) is None:
            emulator.add_user(user_id, name=f"U{user_id}"[:8])
        record = emulator.add_punch(user_id, state=rng.choice((0, 1)), verify=rng.choice((1, 1, 15, 2)))
        if record is not None:
            log.info("zk_emulated_punch", terminal=emulator.name, user_id=user_id, state=record.state)


async def run_emulators(
    *,
    count: int,
    host: str,
    port: int,
    udp_port: int | None,
    profile: str,
    records: int,
    days: int,
    users: int,
    punch_rate: float,
    comm_key: int,
    serial_prefix: str,
    faults: tuple[str, ...],
    duration: float,
) -> None:
    emulators: list[ZkEmulator] = []
    tasks: list[asyncio.Task[None]] = []
    capacity = max(PROFILES[profile].record_capacity, records)
    first_udp = udp_port if udp_port is not None else port
    try:
        for n in range(count):
            emulator = ZkEmulator(
                profile=profile,
                serial_number=f"{serial_prefix}{n + 1:05d}",
                comm_key=comm_key,
                host=host,
                tcp_port=port + n if port else 0,
                udp_port=first_udp + n if first_udp else 0,
                record_capacity=capacity,
                mac=f"00:17:61:{(n >> 16) & 0xFF:02x}:{(n >> 8) & 0xFF:02x}:{n & 0xFF:02x}",
            )
            emulator.generate_log(records=records, days=days, users=users, seed=n)
            for fault in faults:
                await emulator.set_fault(fault)  # type: ignore[arg-type]
            await emulator.start()
            emulators.append(emulator)
            if punch_rate > 0:
                tasks.append(asyncio.create_task(_punch_forever(emulator, punch_rate, users, seed=n)))
        log.info("zk_emulators_running", count=count, profile=profile, first_port=port, records=records)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        if duration > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), duration)
        else:
            await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for emulator in emulators:
            await emulator.stop()
        log.info("zk_emulators_stopped", count=len(emulators))


@click.command("zk")
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on")
@click.option(
    "--port", default=4370, show_default=True, type=int, help="TCP port of the first terminal (0: any)"
)
@click.option("--udp-port", default=None, type=int, help="UDP port of the first terminal (default: --port)")
@click.option("--profile", type=click.Choice(sorted(PROFILES)), default="tft", show_default=True)
@click.option("--records", default=0, show_default=True, type=int, help="attendance records to generate")
@click.option("--days", default=30, show_default=True, type=int, help="spread generated records over N days")
@click.option("--users", default=50, show_default=True, type=int, help="enrolled users")
@click.option(
    "--punch-rate", default="0/s", show_default=True, help="live punches per terminal: N/s, N/min, N/h"
)
@click.option("--count", default=1, show_default=True, type=int, help="terminals on consecutive ports")
@click.option("--comm-key", default=0, show_default=True, type=int, help="numeric comm key (0: none)")
@click.option("--serial-prefix", default="EMU", show_default=True, help="serial numbers are PREFIX00001, …")
@click.option("--fault", "faults", multiple=True, type=click.Choice(FAULTS), help="start with this fault on")
@click.option("--duration", default=0.0, type=float, help="stop after N seconds (0: until Ctrl-C)")
@click.option("--log-level", default="info", show_default=True, help="debug shows every session")
def emulate_command(
    host: str,
    port: int,
    udp_port: int | None,
    profile: str,
    records: int,
    days: int,
    users: int,
    punch_rate: str,
    count: int,
    comm_key: int,
    serial_prefix: str,
    faults: tuple[str, ...],
    duration: float,
    log_level: str,
) -> None:
    """Emulate ZK attendance terminals (TCP/UDP) for trying punchgate without hardware."""
    configure_command_logging(log_level)
    rate = parse_rate(punch_rate)
    if count < 1:
        raise click.BadParameter("--count must be at least 1")
    asyncio.run(
        run_emulators(
            count=count,
            host=host,
            port=port,
            udp_port=udp_port,
            profile=profile,
            records=records,
            days=days,
            users=users,
            punch_rate=rate,
            comm_key=comm_key,
            serial_prefix=serial_prefix,
            faults=faults,
            duration=duration,
        )
    )


if __name__ == "__main__":
    emulate_command()
