"""`punchgate probe zk://HOST[:PORT]`: commissioning check of one ZK terminal.

Connects with the same driver the daemon uses, prints who the terminal is, its counts and
capacities, its clock against this machine's, and its newest punches (with a progress bar
while a large log downloads). Any failure ends in one line that says what is wrong
(unreachable, refused, wrong comm key, not a ZK terminal, ...) and exit status 1.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
import time
from urllib.parse import urlsplit

import click
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from punchgate.drivers.base import (
    AuthError,
    DeviceInfo,
    DriverError,
    DriverTimeoutError,
    ProtocolError,
    RawPunch,
    UnreachableError,
    UnsupportedDeviceError,
)
from punchgate.drivers.description import configure_command_logging
from punchgate.drivers.zk.config import ZkTerminal
from punchgate.drivers.zk.driver import ZkDriver
from punchgate.drivers.zk.errors import CountMismatchError
from punchgate.drivers.zk.names import STATE_NAMES, VERIFY_NAMES
from punchgate.drivers.zk.parsing import INVALID_TIME_EPOCH
from punchgate.drivers.zk.protocol import UserRecord

DEFAULT_PORT = 4370
PROGRESS_FROM_RECORDS = 2000  # smaller logs download too fast for a bar to mean anything


def parse_zk_url(url: str) -> tuple[str, int]:
    """(host, port) from `zk://HOST[:PORT]` (IPv6 hosts in brackets)."""
    parts = urlsplit(url)
    if parts.scheme != "zk" or not parts.hostname:
        raise click.BadParameter(
            f"{url!r}: expected zk://HOST[:PORT], e.g. zk://192.0.2.10:4370", param_hint="URL"
        )
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise click.BadParameter(f"{url!r}: the port must be a number 1..65535", param_hint="URL") from None
    if parts.path not in ("", "/") or parts.query or parts.username:
        raise click.BadParameter(f"{url!r}: only zk://HOST[:PORT] is understood", param_hint="URL")
    return parts.hostname, port


# A ZK terminal serves one session at a time and leaves other clients unanswered meanwhile.
SESSION_HELD = "another client (maybe a running punchgate gateway) may hold its single session"


def diagnose(exc: DriverError, config: ZkTerminal, *, connecting: bool = False) -> str:
    """One line that tells a technician on site what is wrong (`connecting`: at CONNECT)."""
    where = f"{config.host}:{config.port} over {config.transport.upper()}"
    detail = str(exc).removeprefix(f"{exc.device}: ") if exc.device else str(exc)
    if isinstance(exc, UnreachableError):
        if config.transport != "udp":
            hint = "; black-and-white terminals need --udp"
        elif connecting and "no answer" in detail:  # over UDP, a held session is silence too
            hint = f"; or {SESSION_HELD}"
        else:
            hint = ""
        return f"unreachable: no ZK terminal answered at {where} ({detail}){hint}"
    if isinstance(exc, AuthError):
        if config.comm_key is None:
            return f"wrong comm key: the terminal at {where} requires a comm key (give --comm-key)"
        return f"wrong comm key: the terminal at {where} refused the comm key given with --comm-key"
    if isinstance(exc, UnsupportedDeviceError):
        return f"not a ZK terminal: something at {where} answered, but not in the ZK protocol ({detail})"
    if isinstance(exc, DriverTimeoutError):
        if connecting:
            return (
                f"timeout: the terminal at {where} took the connection but did not answer CONNECT "
                f"({detail}): {SESSION_HELD}; stop that client or try again later"
            )
        return f"timeout: the terminal at {where} stopped answering ({detail})"
    if isinstance(exc, CountMismatchError):
        return (
            f"protocol error: the terminal reports {exc.reported} records but sent {len(exc.records)} "
            f"({detail}); the log cannot be trusted as read"
        )
    if isinstance(exc, ProtocolError):
        return f"protocol error: {detail}"
    return f"failed: {detail}"


def _count(value: int | None, capacity: int | None) -> str:
    if value is None:
        return "?"
    if not capacity:
        return str(value)
    return f"{value:,} / {capacity:,} ({100 * value / capacity:.0f}%)"


def _identity_table(info: DeviceInfo, config: ZkTerminal) -> Table:
    table = Table(title=f"ZK terminal {config.host}:{config.port} ({config.transport})", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    rows = [
        ("Serial number", info.serial_number or "?"),
        ("Model", info.model or "?"),
        ("Platform", info.platform or "?"),
        ("Firmware", info.firmware or "?"),
        ("MAC", info.mac or "?"),
        ("Users", _count(info.user_count, info.user_capacity)),
        ("Records", _count(info.record_count, info.record_capacity)),
        ("Fingerprints", _count(info.extra.get("fingers"), info.extra.get("finger_capacity"))),
    ]
    if info.extra.get("face_capacity"):
        rows.append(("Faces", _count(info.extra.get("faces"), info.extra.get("face_capacity"))))
    for name, value in rows:
        table.add_row(name, value)
    table.add_row("Terminal clock", _clock_text(info.clock))
    gateway_now = dt.datetime.now().replace(microsecond=0)
    table.add_row("Gateway clock", gateway_now.isoformat(sep=" "))
    table.add_row("Difference", _drift_text(info.clock, gateway_now))
    return table


def _clock_text(clock: dt.datetime | None) -> str:
    if clock is None:
        return "?"
    if clock < INVALID_TIME_EPOCH.replace(year=2000):
        return f"invalid (raw value {int((clock - INVALID_TIME_EPOCH).total_seconds())}): dead clock battery?"
    return clock.isoformat(sep=" ")


def _drift_text(clock: dt.datetime | None, now: dt.datetime) -> str:
    if clock is None or clock.year < 2000:
        return "unknown"
    seconds = (clock - now).total_seconds()
    if abs(seconds) < 2:
        return "in step (under 2 s)"
    side = "ahead of" if seconds > 0 else "behind"
    return f"{seconds:+.0f} s (terminal {side} this machine, if both keep the same time zone)"


def _punch_table(punches: list[RawPunch], names: dict[str, str], total: int) -> Table:
    table = Table(title=f"Last {len(punches)} of {total:,} punches")
    for column in ("user id", "name", "terminal time", "state", "verify"):
        table.add_column(column)
    verify_names = VERIFY_NAMES
    for punch in punches:
        table.add_row(
            punch.user_id,
            names.get(punch.user_id, ""),
            _clock_text(punch.timestamp),
            f"{punch.state} {STATE_NAMES.get(punch.state, '')}".strip(),
            f"{punch.verify} {verify_names.get(punch.verify, '')}".strip(),
        )
    return table


async def _read_with_bar(driver: ZkDriver, console: Console, reported: int) -> list[RawPunch]:
    if reported < PROGRESS_FROM_RECORDS:
        return await driver.read_records()
    columns = (
        TextColumn(f"downloading {reported:,} records"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("download", total=None)

        def advance(done: int, total: int) -> None:  # called from the pool thread
            progress.update(task, completed=done, total=total)

        return await driver.read_records(progress=advance)


async def run_probe(config: ZkTerminal, console: Console, last: int) -> int:
    """Probe one terminal; returns the exit status (0 ok, 1 failed)."""
    driver = ZkDriver(config)
    errors = Console(stderr=True, highlight=False, soft_wrap=True)
    connecting = True
    try:
        await driver.connect()
        connecting = False
        info = await driver.info()
        console.print(_identity_table(info, config))
        users: list[UserRecord] = []
        try:
            users = await driver.read_users()
        except DriverError as exc:
            console.print(f"(user names unavailable: {exc})")
        started = time.monotonic()
        punches = await _read_with_bar(driver, console, info.record_count or 0)
        elapsed = time.monotonic() - started
        names = {u.user_id: u.name for u in users}
        if last > 0 and punches:
            console.print(_punch_table(punches[-last:], names, len(punches)))
        console.print(f"Read {len(punches):,} records and {len(users):,} users in {elapsed:.1f} s.")
        return 0
    except DriverError as exc:
        errors.print(f"probe failed: {diagnose(exc, config, connecting=connecting)}", markup=False)
        return 1
    finally:
        await driver.close()


@click.command("probe")
@click.argument("url")
@click.option("--udp", is_flag=True, help="Talk UDP instead of TCP (black-and-white firmware).")
@click.option(
    "--comm-key", "comm_key", default=None, metavar="K", help="Numeric comm key set on the terminal."
)
@click.option(
    "--timeout", type=click.FloatRange(min=0.1, max=300), default=10.0, show_default=True, help="Seconds."
)
@click.option(
    "--encoding", default="utf-8", show_default=True, help="Text encoding of user names (e.g. gbk)."
)
@click.option(
    "--last", type=click.IntRange(min=0), default=10, show_default=True, help="Newest punches to show."
)
def probe_command(
    url: str, udp: bool, comm_key: str | None, timeout: float, encoding: str, last: int
) -> None:
    """Connect to one ZK terminal at zk://HOST[:PORT] and print what it says about itself."""
    host, port = parse_zk_url(url)
    # The driver's own log lines would clutter the report; the diagnosis line says it all.
    configure_command_logging("error")
    try:
        config = ZkTerminal.model_validate(
            {
                "name": "probe",
                "type": "zk",
                "host": host,
                "port": port,
                "transport": "udp" if udp else "tcp",
                "comm_key": comm_key,
                "encoding": encoding,
                "timeout": timeout,
                "live": False,
            }
        )
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise click.UsageError(problems) from None
    sys.exit(asyncio.run(run_probe(config, Console(highlight=False), last)))
