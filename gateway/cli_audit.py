"""`punchgate audit verify|head`: prove the buffer's audit chain, or print its head (docs/audit.md).

Both read the buffer file read-only, so they run beside the daemon. `verify` takes the head
central holds, from a file (`--head`) or from the broker's retained `{base}/audit`
(`--from-broker`), and then also proves the chain was neither truncated nor rewritten.
Exit codes: 0 the chain holds, 1 it is broken (the first broken entry is named), 2 the buffer
or the head cannot be read, or bad usage.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from punchgate.gateway.cli_common import buffer_path, config_or_buffer_options, settings_unless_buffer

if TYPE_CHECKING:
    from punchgate.gateway.settings import Settings

EXIT_BROKEN = 1
EXIT_UNREADABLE = 2


def head_from_broker(settings: Settings, *, timeout: float) -> dict[str, Any]:
    """The retained head on `{base}/audit`; ValueError when none arrives within `timeout`."""
    import threading

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from punchgate.sync.forwarder import tls_context
    from punchgate.sync.topics import Topics

    topic = Topics(settings.mqtt.topic_prefix, settings.gateway_id).audit
    received: list[bytes] = []
    done = threading.Event()
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="")
    if settings.mqtt.username:
        password = settings.mqtt.password.get_secret_value() if settings.mqtt.password else None
        client.username_pw_set(settings.mqtt.username, password)
    context = tls_context(settings.mqtt)
    if context is not None:
        client.tls_set_context(context)

    def on_connect(c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if not reason.is_failure:
            c.subscribe(topic, qos=1)

    def on_message(_c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        if message.retain and not received:
            received.append(bytes(message.payload))
            done.set()

    client.on_connect = on_connect
    client.on_message = on_message
    try:
        client.connect(settings.mqtt.host, settings.mqtt.port, keepalive=30)
    except OSError as exc:
        raise ValueError(
            f"cannot reach the broker at {settings.mqtt.host}:{settings.mqtt.port}: {exc}"
        ) from None
    client.loop_start()
    try:
        if not done.wait(timeout):
            raise ValueError(f"no retained audit head on {topic} within {timeout:g} s")
    finally:
        client.disconnect()
        client.loop_stop()
    value = json.loads(received[0])
    if not isinstance(value, dict):
        raise ValueError(f"the retained message on {topic} is not an audit head")
    return value


@click.group("audit")
def audit() -> None:
    """The buffer's tamper-evident audit chain: verify it, or print its head."""


@audit.command("verify")
@config_or_buffer_options
@click.option(
    "--head",
    "head_file",
    type=click.Path(path_type=Path),
    default=None,
    help="a head saved from {base}/audit (JSON)",
)
@click.option("--from-broker", is_flag=True, help="take the head retained on the broker (needs the config)")
@click.option(
    "--timeout", type=float, default=10.0, show_default=True, help="seconds to wait for the broker's head"
)
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
def verify(
    config: Path | None,
    buffer: Path | None,
    head_file: Path | None,
    from_broker: bool,
    timeout: float,
    as_json: bool,
) -> None:
    """Recompute the chain, hold the buffer's punches and make-up punches to it, and (given the
    head central holds) prove nothing was truncated or rewritten. Exit 1 names the first
    broken entry."""
    from punchgate.sync.audit_verify import read_head_file
    from punchgate.sync.audit_verify import verify as run_verify

    if head_file is not None and from_broker:
        raise click.UsageError("give --head FILE or --from-broker, not both")
    settings = settings_unless_buffer(config, None if from_broker else buffer, check_files=from_broker)
    head: dict[str, Any] | None = None
    try:
        if head_file is not None:
            head = read_head_file(head_file)
        elif from_broker:
            assert settings is not None
            head = head_from_broker(settings, timeout=timeout)
        report = run_verify(buffer_path(settings, buffer), head)
    except (ValueError, OSError) as exc:
        click.echo(f"cannot verify: {exc}", err=True)
        sys.exit(EXIT_UNREADABLE)
    except Exception as exc:  # sqlite3.DatabaseError and friends: not a buffer we can read
        click.echo(f"cannot verify: {type(exc).__name__}: {exc}", err=True)
        sys.exit(EXIT_UNREADABLE)
    if as_json:
        first = report.first_broken
        click.echo(
            json.dumps(
                {
                    "ok": report.ok,
                    "entries": report.entries,
                    "head": report.last.as_dict() if report.last else None,
                    "first_broken": None if first is None else {"seq": first.seq, "problem": first.problem},
                    "findings": [{"seq": f.seq, "problem": f.problem} for f in report.findings],
                },
                indent=1,
            )
        )
    else:
        for line in report.lines():
            click.echo(line)
    sys.exit(0 if report.ok else EXIT_BROKEN)


@audit.command("head")
@config_or_buffer_options
@click.option(
    "--out", type=click.Path(path_type=Path), default=None, help="write it to this file (default: print it)"
)
def head(config: Path | None, buffer: Path | None, out: Path | None) -> None:
    """Print the chain's newest entry as {base}/audit publishes it (keep it to verify against)."""
    import datetime as dt

    from punchgate.sync import audit as chain
    from punchgate.sync.audit_verify import connect_read_only

    settings = settings_unless_buffer(config, buffer)
    path = buffer_path(settings, buffer)
    try:
        conn = connect_read_only(path)
        try:
            last = chain.head(conn)
            owner = conn.execute("SELECT gateway_id FROM identity").fetchone()
        finally:
            conn.close()
    except Exception as exc:
        click.echo(f"cannot read {path}: {exc}", err=True)
        sys.exit(EXIT_UNREADABLE)
    if last is None:
        click.echo(f"{path}: the audit chain is empty (the daemon starts it at its first open)", err=True)
        sys.exit(EXIT_UNREADABLE)
    gateway = settings.gateway_id if settings else (owner[0] if owner else None)
    value = {
        **last.as_dict(),
        "gateway": gateway,
        "as_of": dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z"),
    }
    text = json.dumps(value, indent=1) + "\n"
    if out is None:
        click.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        click.echo(f"head #{last.seq} written to {out}")
