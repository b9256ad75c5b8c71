"""`punchgate emulate anviz` and `punchgate probe anviz://…` (wired into gateway/cli.py).

probe URLs: `anviz:///dev/ttyUSB0?baud=9600&parity=N` (a serial line: note the third slash)
or `anviz://192.0.2.10:5010` (TCP); the device id is an option because a bus has several.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import signal
import sys
import threading
from urllib.parse import urlsplit

import click
from rich.console import Console
from rich.table import Table

from punchgate.drivers.anviz import codec
from punchgate.drivers.anviz.driver import AnvizDriver, raw_punch
from punchgate.drivers.anviz.emulator import EmulatedTerminal, Faults, PtyBus, TcpServer
from punchgate.drivers.anviz.endpoint import Endpoint, parse_endpoint
from punchgate.drivers.base import DriverError


def endpoint_from_probe_url(url: str) -> Endpoint:
    """anviz:///dev/x?… is a serial line, anviz://host[:port] is TCP; serial:// and tcp:// also work."""
    parts = urlsplit(url)
    if parts.scheme == "anviz":
        if parts.netloc:
            url = "tcp://" + parts.netloc + (parts.path if parts.path != "/" else "")
        else:
            url = "serial://" + parts.path + (f"?{parts.query}" if parts.query else "")
    try:
        return parse_endpoint(url)
    except ValueError as exc:
        raise click.BadParameter(
            f"{exc} (probe takes anviz:///dev/ttyUSB0?baud=9600 or anviz://host:5010)"
        ) from None


# ---- probe ----------------------------------------------------------------------------------


@click.command("probe")
@click.argument("url")
@click.option("--device-id", type=click.IntRange(1, codec.MAX_DEVICE_ID), default=1, show_default=True)
@click.option(
    "--timeout", type=click.FloatRange(min=0.01), default=2.0, show_default=True, help="seconds per reply"
)
@click.option("--retries", type=click.IntRange(0, 10), default=2, show_default=True)
@click.option(
    "--records",
    type=click.Choice(["new", "all", "none"]),
    default="new",
    show_default=True,
    help="which records to download for the last-punches table (nothing is ever cleared)",
)
@click.option("--last", type=click.IntRange(0, 1000), default=5, show_default=True, help="punches to show")
@click.option(
    "--epoch", type=click.Choice(["2000-01-02", "2000-01-01"]), default="2000-01-02", show_default=True
)
def probe_command(
    url: str, device_id: int, timeout: float, retries: int, records: str, last: int, epoch: str
) -> None:
    """Read-only look at one Anviz terminal: identity, counts, clock and its last punches."""
    endpoint = endpoint_from_probe_url(url)
    driver = AnvizDriver(
        name=f"probe-{device_id}",
        endpoint=endpoint,
        device_id=device_id,
        timeout=timeout,
        attempts=retries + 1,
        epoch=dt.datetime.fromisoformat(epoch),
        live=False,
    )
    console = Console()
    try:
        asyncio.run(_probe(driver, console, records=records, last=last))
    except DriverError as exc:
        click.echo(f"probe failed ({exc.fault}): {exc}", err=True)
        sys.exit(1)


async def _probe(driver: AnvizDriver, console: Console, *, records: str, last: int) -> None:
    try:
        await driver.connect()
        info = await driver.info()
        asked_at = dt.datetime.now().replace(microsecond=0)
        punches = [] if records == "none" else await driver.download(new_only=records == "new")
    finally:
        await driver.close()

    table = Table(title=f"Anviz terminal, device id {driver.device_id}", show_header=False)
    table.add_row("serial number", info.serial_number)
    table.add_row("model", info.model or "?")
    table.add_row("firmware", info.firmware or "?")
    table.add_row("users", f"{info.user_count} of {info.user_capacity}")
    table.add_row("records", f"{info.record_count} of {info.record_capacity}")
    table.add_row("new records", str(info.extra.get("new_records")))
    if info.clock is not None:
        drift = (info.clock - asked_at).total_seconds()
        table.add_row("terminal clock", f"{info.clock.isoformat(sep=' ')} ({drift:+.0f} s vs this machine)")
    link = info.extra.get("link", {})
    table.add_row("link", ", ".join(f"{k} {v}" for k, v in link.items()))
    console.print(table)

    if records == "none" or last == 0:
        return
    shown = punches[-last:]
    title = f"last {len(shown)} of {len(punches)} {records} records"
    punch_table = Table("user", "local time", "state", "verify", "work code", "raw", title=title)
    for record in shown:
        raw = raw_punch(record, driver.epoch)
        punch_table.add_row(
            raw.user_id,
            raw.timestamp.isoformat(sep=" "),
            f"{raw.state}{' door' if record.door_opened else ''}",
            f"{raw.verify} (0x{record.backup_code:02x})",
            str(raw.work_code),
            raw.raw.hex(),
        )
    console.print(punch_table)


# ---- emulate --------------------------------------------------------------------------------


@click.command("emulate")
@click.option(
    "--device-id", "device_ids", type=click.IntRange(1, codec.MAX_DEVICE_ID), multiple=True, help="repeatable"
)
@click.option(
    "--records", type=click.IntRange(min=0), default=50, show_default=True, help="history per terminal"
)
@click.option(
    "--pty/--no-pty", default=True, show_default=True, help="serve the terminals on a pseudo-terminal"
)
@click.option(
    "--tcp-port", type=click.IntRange(0, 65535), default=None, help="also serve TCP (0: a free port)"
)
@click.option("--host", default="127.0.0.1", show_default=True, help="TCP address to listen on")
@click.option("--punch-every", type=click.FloatRange(min=0), default=0, help="seconds between new punches")
@click.option(
    "--capacity", type=click.IntRange(min=1), default=50_000, show_default=True, help="log capacity"
)
@click.option("--silent", "silent_ids", type=int, multiple=True, help="device id that never answers")
@click.option(
    "--crc-error-every", type=click.IntRange(min=0), default=0, help="corrupt every n-th reply's CRC"
)
@click.option("--noise-every", type=click.IntRange(min=0), default=0, help="noise before every n-th reply")
@click.option(
    "--bad-length-every", type=click.IntRange(min=0), default=0, help="wrong LEN in every n-th reply"
)
@click.option("--drop-every", type=click.IntRange(min=0), default=0, help="ignore every n-th request")
@click.option("--clock-reset", is_flag=True, help="start with the clock at 2000-01-02 (dead battery)")
@click.option("--log-full", is_flag=True, help="start with the log filled to capacity")
def emulate_command(
    device_ids: tuple[int, ...],
    records: int,
    pty: bool,
    tcp_port: int | None,
    host: str,
    punch_every: float,
    capacity: int,
    silent_ids: tuple[int, ...],
    crc_error_every: int,
    noise_every: int,
    bad_length_every: int,
    drop_every: int,
    clock_reset: bool,
    log_full: bool,
) -> None:
    """Emulated Anviz terminals on one pseudo-terminal (an RS485 bus) and/or TCP, until Ctrl-C."""
    if not pty and tcp_port is None:
        raise click.UsageError("nothing to serve: give --tcp-port or leave --pty on")
    terminals = []
    for device_id in device_ids or (1,):
        faults = Faults(
            silent=device_id in silent_ids,
            crc_error_every=crc_error_every,
            noise_every=noise_every,
            bad_length_every=bad_length_every,
            drop_every=drop_every,
        )
        terminal = EmulatedTerminal(device_id, record_capacity=capacity, faults=faults)
        terminal.add_history(min(records, capacity))
        if log_full:
            terminal.fill_log()
        if clock_reset:
            terminal.reset_clock()
        terminals.append(terminal)

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    bus = PtyBus(terminals).start() if pty else None
    server = TcpServer(terminals, host=host, port=tcp_port).start() if tcp_port is not None else None
    ids = ",".join(str(t.device_id) for t in terminals)
    try:
        if bus is not None:
            click.echo(f"pty: {bus.path}  (device ids {ids}; endpoint serial://{bus.path}?baud=9600)")
        if server is not None:
            click.echo(
                f"tcp: {server.host}:{server.port}  (device ids {ids}; endpoint tcp://{server.host}:{server.port})"
            )
        click.echo("running; Ctrl-C to stop")
        sys.stdout.flush()
        while not stop.wait(punch_every or 3600):
            terminal = random.choice(terminals)
            terminal.punch(random.randint(1000, 1019), state=random.randint(0, 1))
    finally:
        if server is not None:
            server.stop()
        if bus is not None:
            bus.stop()
        click.echo("stopped")
