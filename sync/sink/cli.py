"""`punchgate sink run` and `punchgate sink check` (docs/sink.md).

`punchgate sink ...` hands its arguments to `sink` here (gateway/cli.py), with a logging hook
as the context object: sync does not import the gateway's logging set-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import sqlalchemy as sa
import structlog

from punchgate.sync.sink import db, tables
from punchgate.sync.sink.consumer import Sink, SinkSettings

log = structlog.get_logger(__name__)
PASSWORD_ENV = "PUNCHGATE_SINK_MQTT_PASSWORD"

_db_option = click.option(
    "--db",
    "database",
    default=db.DEFAULT_DB,
    show_default=True,
    envvar="PUNCHGATE_SINK_DB",
    help="database: a file path (SQLite) or a URL, e.g. postgresql://user@host/punches (env PUNCHGATE_SINK_DB)",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def sink() -> None:
    """The reference central consumer: punches, states, events and digests into a database."""


def _configure_logging(ctx: click.Context, log_format: str) -> None:
    hook: Callable[[str, bool | None], None] | None = ctx.obj if callable(ctx.obj) else None
    if hook is not None:
        hook("info", None if log_format == "auto" else log_format == "json")


@sink.command("run")
@_db_option
@click.option("--host", default="127.0.0.1", show_default=True, help="broker host")
@click.option("--port", default=1883, show_default=True, type=int, help="broker port")
@click.option("--username", default=None, help=f"broker user name (the password: env {PASSWORD_ENV})")
@click.option("--tls", is_flag=True, help="TLS to the broker (the system's CA unless --ca-file)")
@click.option("--ca-file", type=click.Path(dir_okay=False), default=None, help="CA bundle of the broker")
@click.option("--cert-file", type=click.Path(dir_okay=False), default=None, help="client certificate")
@click.option("--key-file", type=click.Path(dir_okay=False), default=None, help="its private key")
@click.option("--prefix", default="punchgate", show_default=True, help="the gateways' mqtt.topic_prefix")
@click.option("--group", default="punchgate-sink", show_default=True, help="shared subscription group")
@click.option(
    "--client-id", default=None, help="MQTT client id, one per sink process (default: punchgate-sink-HOST)"
)
@click.option(
    "--http",
    "http",
    default="127.0.0.1:9118",
    show_default=True,
    help="/healthz and /metrics (ADDR:PORT; 'off')",
)
@click.option("--no-confirm", is_flag=True, help="store only; publish no confirmations")
@click.option(
    "--resend/--no-resend",
    default=True,
    show_default=True,
    help="ask a gateway (punches.resend) for a day its digest shows punches missing at central",
)
@click.option(
    "--resend-interval",
    type=click.FloatRange(min=1),
    default=3600.0,
    show_default=True,
    help="seconds before the same gateway, terminal and day is asked for again",
)
@click.option(
    "--mismatch-grace",
    type=click.FloatRange(min=0),
    default=600.0,
    show_default=True,
    help="seconds a digest day may differ before it counts as a mismatch (and is asked for again)",
)
@click.option(
    "--check-interval",
    type=click.FloatRange(min=0.1),
    default=30.0,
    show_default=True,
    help="seconds between re-checks of digest days that did not match",
)
@click.option(
    "--log-format", type=click.Choice(["auto", "json", "console"]), default="auto", show_default=True
)
@click.pass_context
def run(ctx: click.Context, /, database: str, http: str, log_format: str, **options: Any) -> None:
    """Consume every gateway's stream into the database until SIGTERM or SIGINT."""
    _configure_logging(ctx, log_format)
    client_id = options.pop("client_id") or f"punchgate-sink-{socket.gethostname()}"
    settings = SinkSettings(
        db=database,
        host=options["host"],
        port=options["port"],
        username=options["username"],
        password=os.environ.get(PASSWORD_ENV),
        tls=options["tls"],
        ca_file=options["ca_file"],
        cert_file=options["cert_file"],
        key_file=options["key_file"],
        prefix=options["prefix"],
        group=options["group"],
        client_id=client_id,
        confirm=not options["no_confirm"],
        resend=options["resend"],
        resend_interval=options["resend_interval"],
        mismatch_grace=options["mismatch_grace"],
        check_interval=options["check_interval"],
    )
    sys.exit(asyncio.run(_serve(settings, http)))


async def _serve(settings: SinkSettings, http: str) -> int:
    from punchgate.sync.sink import http as sink_http

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sink_ = Sink(settings)
    runner = None
    if http != "off":
        host, _, port = http.rpartition(":")
        runner = await sink_http.start(sink_, host or "127.0.0.1", int(port))
        log.info("sink_http_listening", address=http)
    try:
        if not await _wait_for_database(sink_, stop):
            return 0  # stopped while waiting: nothing was received, nothing to commit
    except DatabaseUnusable as exc:
        log.error("sink_database_unusable", error=str(exc))
        click.echo(f"punchgate sink: --db {settings.db}: {exc}", err=True)
        if runner is not None:
            await runner.cleanup()
        return 2
    await asyncio.to_thread(sink_.start)
    log.info(
        "sink_started",
        broker=f"{settings.host}:{settings.port}",
        group=settings.group,
        client_id=settings.client_id,
    )
    try:
        while not stop.is_set():
            await asyncio.wait([asyncio.ensure_future(stop.wait())], timeout=1.0)
            if not sink_.writer_alive():
                log.error("sink_writer_died")
                return 1
    finally:
        await asyncio.to_thread(sink_.stop)
        if runner is not None:
            await runner.cleanup()
    return 0


class DatabaseUnusable(Exception):
    """A database the sink can never use as configured (an SQLite path it cannot open)."""


# A sink started before its PostgreSQL (a boot, a database restart) waits for it rather than
# exiting: nothing can be received meanwhile, and the gateways keep what is unconfirmed.
DB_WAIT_FIRST = 1.0
DB_WAIT_MAX = 30.0


async def _wait_for_database(sink_: Sink, stop: asyncio.Event) -> bool:
    """Migrate the database, retrying with backoff while it is unreachable; False if stopped first."""
    delay = DB_WAIT_FIRST
    while True:
        try:
            await asyncio.to_thread(sink_.prepare_database)
            return True
        except sa.exc.OperationalError as exc:
            if sink_.engine.dialect.name == "sqlite":
                raise DatabaseUnusable(str(exc.orig)) from exc
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            sink_.stats.waiting_for_database = True
            sink_.stats.db_failures += 1
            sink_.stats.last_db_error = reason
            log.warning("sink_database_waiting", error=reason, retry_in=delay)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await stop.wait()
        if stop.is_set():
            log.info("sink_stopped_while_waiting_for_database")
            return False
        delay = min(delay * 2, DB_WAIT_MAX)


@sink.command("check")
@_db_option
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
@click.pass_context
def check(ctx: click.Context, database: str, as_json: bool) -> None:
    """Compare the gateways' digests with the sink's tables; exit 1 when a day differs."""
    _configure_logging(ctx, "console")
    if "://" not in database and not Path(database).exists():
        click.echo(f"no sink database at {database}", err=True)
        sys.exit(2)
    engine = db.create(database)
    try:
        db.upgrade(engine)
        with engine.begin() as conn:
            days = db.recheck(conn, dt.datetime.now(dt.UTC), everything=True) + db.extra_days(conn)
            windows = conn.execute(tables.digest_windows.select()).mappings().all()
    finally:
        engine.dispose()
    bad = sorted((d for d in days if not d.ok), key=lambda d: (d.gateway, d.device, d.day))
    if as_json:
        report = {
            "terminals": len(windows),
            "days": len(days),
            "differing": [
                {
                    "gateway": d.gateway,
                    "device": d.device,
                    "day": d.day,
                    "gateway_count": d.gateway_count,
                    "central_count": d.central_count,
                    "status": d.status,
                }
                for d in bad
            ],
        }
        click.echo(json.dumps(report, indent=2))
    else:
        gateways = len({w["gateway"] for w in windows})
        click.echo(
            f"checked {len(days)} days of {len(windows)} terminals on {gateways} gateways: {len(bad)} differ"
        )
        for d in bad:
            gap = d.gateway_count - d.central_count
            what = {
                "missing": f"{gap} missing at central",
                "extra": f"{-gap} at central the gateway does not hold",
            }
            click.echo(
                f"  gateway {d.gateway}, terminal {d.device}, {d.day}: gateway {d.gateway_count}, "
                f"central {d.central_count} — {what.get(d.status, 'same count, different ids')}"
            )
    sys.exit(1 if bad else 0)
