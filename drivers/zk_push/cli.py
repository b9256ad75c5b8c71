"""`punchgate emulate zk-push …`: run one or many emulated push terminals until Ctrl-C.

The gateway CLI attaches `emulate_command`; it can also run alone with
`python -m punchgate.drivers.zk_push.cli`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from collections.abc import Callable
from pathlib import Path

import click
import structlog

from punchgate.drivers.description import configure_command_logging
from punchgate.drivers.zk_push.emulator import FAULTS, ZkPushEmulator
from punchgate.drivers.zk_push.emulator.faults import FaultValue, parse_fault_file, parse_fault_spec

log = structlog.get_logger(__name__)

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|m|min|h|hour)\s*$")
_PER_SECOND = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "hour": 3600.0}


def parse_rate(text: str) -> float:
    """Punches per second from `2/s`, `30/min` or `100/h` (0 turns punching off)."""
    match = _RATE.match(text)
    if not match:
        raise click.BadParameter(f"{text!r}: expected N/s, N/min or N/h, e.g. 30/min")
    return float(match.group(1)) / _PER_SECOND[match.group(2)]


def serials(sn: str, count: int) -> list[str]:
    """One terminal keeps SN; several are SN001, SN002, …"""
    return [sn] if count == 1 else [f"{sn}{n + 1:03d}" for n in range(count)]


def reload_fault_file(path: Path, emulators: list[ZkPushEmulator]) -> bool:
    """Make the file's faults the complete set on every terminal (or on the one named with
    `@SERIAL`). A file that cannot be read or parsed changes nothing. True when applied."""
    try:
        lines = parse_fault_file(path.read_text(encoding="utf-8"))
        known = {emulator.sn for emulator in emulators}
        strangers = sorted({line.serial for line in lines if line.serial is not None} - known)
        if strangers:
            raise ValueError(f"no emulated terminal has serial {', '.join(strangers)}")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        log.error("zk_push_fault_file_rejected", path=str(path), error=str(exc))
        return False
    for emulator in emulators:
        wanted = [(line.name, line.params) for line in lines if line.serial in (None, emulator.sn)]
        emulator.apply_faults(wanted)
    log.info(
        "zk_push_fault_file_applied",
        path=str(path),
        faults={emulator.sn: sorted(emulator.faults) for emulator in emulators},
    )
    return True


async def run_emulators(
    *,
    make: Callable[[str, int], ZkPushEmulator],
    sns: list[str],
    faults: list[tuple[str, dict[str, FaultValue]]],
    fault_file: Path | None,
    duration: float,
) -> None:
    """Run a terminal per serial (`make(serial, seed)`) until SIGINT/SIGTERM or `duration`."""
    emulators = [make(sn, n) for n, sn in enumerate(sns)]
    for emulator in emulators:
        for name, params in faults:
            emulator.set_fault(name, **params)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    with contextlib.suppress(NotImplementedError, RuntimeError, AttributeError):
        if fault_file is not None:
            loop.add_signal_handler(signal.SIGUSR1, reload_fault_file, fault_file, emulators)
        else:
            loop.add_signal_handler(
                signal.SIGUSR1, lambda: log.warning("zk_push_sigusr1_ignored", reason="no --fault-file")
            )
    try:
        for emulator in emulators:
            await emulator.start()
        log.info(
            "zk_push_emulators_running",
            pid=os.getpid(),
            server=emulators[0].server_url if emulators else None,
            serials=sns,
            fault_file=str(fault_file) if fault_file else None,
        )
        if duration > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(duration):
                    await stop.wait()
        else:
            await stop.wait()
    finally:
        for emulator in emulators:
            await emulator.stop()
        log.info(
            "zk_push_emulators_stopped",
            count=len(emulators),
            uploads=sum(e.counters.uploads for e in emulators),
            lines=sum(e.counters.lines_uploaded for e in emulators),
        )


FAULT_HELP = f"""start with this fault on: NAME or NAME:key=value,key=value (repeatable;
see below). Faults: {", ".join(FAULTS)}."""


@click.command(
    "zk-push",
    epilog="""\b
Faults (NAME, parameters with defaults):
  garbage_lines      count=3 junk lines mixed into each ATTLOG post
  duplicate_uploads  post each ATTLOG chunk again after its OK
  factory_reset      one-shot: log cleared, stamps 0, OPLOG 22, reboot
  dead_battery       the clock restarts at 2000-01-01 00:00:00
  drop_mid_post      cut a data post after after_bytes (half the body)
  slow_posts         trickle chunk_bytes=16 bytes every interval=0.05 s
  wrong_sn           every request says SN=sn (default: serial + X)
  heartbeat_flood    getrequest every interval=0.01 s instead of Delay
'times=N' (garbage_lines, duplicate_uploads, drop_mid_post, slow_posts)
switches the fault off after N posts.
\b
Switching faults from outside the process: start with --fault-file PATH,
write the faults you want into PATH, one a line, then send SIGUSR1:
    [@SERIAL] NAME [key=value ...]    # '#' starts a comment
\b
    printf 'dead_battery\\nwrong_sn sn=NOTME\\n' > faults.txt
    echo '@EMUPUSH002 slow_posts interval=0.2' >> faults.txt
    kill -USR1 <pid>      # the pid is in the zk_push_emulators_running line
\b
The file states the complete set: faults it does not name are switched off
(an empty file clears them all); factory_reset fires each time the file is
read while it is listed. A file that does not parse, or names a serial no
terminal has, changes nothing and is logged as zk_push_fault_file_rejected.""",
)
@click.option("--server", default="http://127.0.0.1:8081", show_default=True, help="the receiver's base URL")
@click.option(
    "--sn", default="EMUPUSH", show_default=True, help="serial number (with --count: SN001, SN002, …)"
)
@click.option("--count", default=1, show_default=True, type=int, help="number of terminals")
@click.option("--records", default=0, show_default=True, type=int, help="backlog of attendance records")
@click.option("--days", default=30, show_default=True, type=int, help="spread the backlog over N days")
@click.option("--users", default=50, show_default=True, type=int, help="enrolled users")
@click.option(
    "--punch-rate", default="0/min", show_default=True, help="live punches per terminal: N/s, N/min, N/h"
)
@click.option("--timezone", default="Asia/Shanghai", show_default=True, help="the terminals' IANA zone")
@click.option("--encoding", default="gb18030", show_default=True, help="user names' encoding on the wire")
@click.option(
    "--realtime/--no-realtime", default=True, show_default=True, help="when the server does not say"
)
@click.option(
    "--sync-clock/--no-sync-clock",
    default=False,
    show_default=True,
    help="set the clock from the server's Date header at each handshake, as some firmware does",
)
@click.option("--chunk-size", default=500, show_default=True, type=int, help="record lines per post")
@click.option("--delay", type=float, default=None, help="heartbeat every N s instead of the server's Delay")
@click.option("--error-delay", type=float, default=None, help="retry after N s instead of ErrorDelay")
@click.option("--request-timeout", default=30.0, show_default=True, type=float, help="seconds per request")
@click.option("--reboot-seconds", default=30.0, show_default=True, type=float, help="downtime of a reboot")
@click.option("--fault", "faults", multiple=True, help=FAULT_HELP)
@click.option(
    "--fault-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="re-read on SIGUSR1: the complete set of faults (see below)",
)
@click.option("--duration", default=0.0, type=float, help="stop after N seconds (0: until Ctrl-C)")
@click.option("--log-level", default="info", show_default=True, help="debug shows every request")
def emulate_command(
    server: str,
    sn: str,
    count: int,
    records: int,
    days: int,
    users: int,
    punch_rate: str,
    timezone: str,
    encoding: str,
    realtime: bool,
    sync_clock: bool,
    chunk_size: int,
    delay: float | None,
    error_delay: float | None,
    request_timeout: float,
    reboot_seconds: float,
    faults: tuple[str, ...],
    fault_file: Path | None,
    duration: float,
    log_level: str,
) -> None:
    """Emulate ZK push (ADMS / iclock) terminals posting to a receiver, for trying punchgate
    without hardware."""
    configure_command_logging(log_level)
    if count < 1:
        raise click.BadParameter("--count must be at least 1")
    try:
        initial = [parse_fault_spec(spec) for spec in faults]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--fault") from None
    rate = parse_rate(punch_rate)

    def make(serial: str, seed: int) -> ZkPushEmulator:
        return ZkPushEmulator(
            server,
            serial,
            seed=seed,
            records=records,
            days=days,
            users=users,
            timezone=timezone,
            encoding=encoding,
            realtime=realtime,
            sync_clock=sync_clock,
            punch_rate=rate,
            chunk_size=chunk_size,
            delay=delay,
            error_delay=error_delay,
            request_timeout=request_timeout,
            reboot_seconds=reboot_seconds,
        )

    try:
        ZkPushEmulator(server, sn, users=0, timezone=timezone, encoding=encoding, chunk_size=chunk_size)
    except (ValueError, LookupError) as exc:  # a bad URL, zone, encoding: say so before starting
        raise click.BadParameter(str(exc)) from None
    asyncio.run(
        run_emulators(
            make=make,
            sns=serials(sn, count),
            faults=initial,
            fault_file=fault_file,
            duration=duration,
        )
    )


if __name__ == "__main__":
    emulate_command()
