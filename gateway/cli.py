"""The `punchgate` command: run the daemon, check a config, probe and emulate terminals, status, demo.

Exit codes: 0 success, 1 runtime failure or unhealthy status, 2 bad config or usage.
Driver-specific subcommands (`emulate zk`, `probe anviz://…`) live with their driver packages
and are imported lazily, so `punchgate --help` stays fast and one driver's import problem
never breaks the others.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType

# Stop signals that reach `punchgate run` before the daemon's event loop handles them
# (Application.run): noted, and the daemon then stops cleanly without starting. The handler
# goes in before anything else is imported, since systemd may stop the service at any moment.
_early_signals: list[int] = []


def _note_early_stop(signum: int, _frame: FrameType | None) -> None:
    _early_signals.append(signum)


def _catch_early_stop() -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _note_early_stop)


if sys.argv[1:2] == ["run"]:
    _catch_early_stop()
    # The daemon runs without rich (about 5 MiB of RSS it never uses): structlog must be
    # imported that way before anything else imports it (gateway/lean_imports.py says why).
    from punchgate.gateway.lean_imports import import_structlog_without_rich

    import_structlog_without_rich()

from pathlib import Path  # noqa: E402  (after the handler: see above)
from typing import TYPE_CHECKING  # noqa: E402
from urllib.parse import urlsplit  # noqa: E402

import click  # noqa: E402

from punchgate.gateway import __version__  # noqa: E402
from punchgate.gateway.cli_common import call_api, config_option  # noqa: E402

if TYPE_CHECKING:  # the settings (pydantic) load only in the commands that read a config
    from punchgate.gateway.settings import Settings

EXIT_CONFIG = 2
HELP = ("-h", "--help")


def _load_or_exit(path: Path, *, check_files: bool = True, require_terminals: bool = False) -> Settings:
    from punchgate.gateway.settings import ConfigError, load_settings

    try:
        return load_settings(path, check_files=check_files, require_terminals=require_terminals)
    except ConfigError as exc:
        click.echo(f"{exc.path}: invalid configuration", err=True)
        for problem in exc.problems:
            click.echo(f"  {problem}", err=True)
        sys.exit(EXIT_CONFIG)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="punchgate")
def main() -> None:
    """punchgate: reads attendance terminals, buffers every punch durably, forwards them over MQTT."""


@main.command("check-config")
@click.argument("config", type=click.Path(path_type=Path))
def check_config(config: Path) -> None:
    """Validate CONFIG; print every problem with its key path (exit 2) or a summary (exit 0)."""
    # A site config without terminals is a mistake; the daemon itself may run with none (tests).
    settings = _load_or_exit(config, require_terminals=True)
    kinds: dict[str, int] = {}
    for terminal in settings.terminals:
        kinds[terminal.type] = kinds.get(terminal.type, 0) + 1
    summary = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items())) or "none"
    click.echo(
        f"{config}: OK — gateway {settings.gateway_id!r}, {len(settings.terminals)} terminals ({summary}), "
        f"broker {settings.mqtt.host}:{settings.mqtt.port}, buffer {settings.buffer.path}"
    )
    if settings.http.enabled:  # loopback, HTTPS, or plain HTTP beyond loopback (allow_plain_http)
        click.echo(settings.http.serving())
    from punchgate.gateway.push import listener_summary, push_enabled

    if push_enabled(settings):  # where push terminals must send, and a warning for a wildcard bind
        click.echo(listener_summary(settings))


@main.command("run")
@click.option("--config", "-c", "config", required=True, type=click.Path(path_type=Path), help="config file")
@click.option(
    "--log-format", type=click.Choice(["auto", "json", "console"]), default="auto", show_default=True
)
def run(config: Path, log_format: str) -> None:
    """Run the gateway daemon until SIGTERM or SIGINT."""
    # Already done at import for `punchgate run`; again here for other callers (CliRunner).
    _catch_early_stop()
    settings = _load_or_exit(config)
    from punchgate.gateway.app import run_daemon
    from punchgate.gateway.logs import configure_logging

    configure_logging(settings.log_level, json=None if log_format == "auto" else log_format == "json")
    sys.exit(run_daemon(settings, early_signals=_early_signals))


def _driver_command(kind: str, which: str) -> click.Command:
    """A driver's own `probe` or `emulate` command, as its description names it."""
    from punchgate.drivers.registry import BY_TYPE

    description = BY_TYPE.get(kind)
    if description is None:
        raise click.UsageError(f"unknown terminal type {kind!r}; known: {', '.join(BY_TYPE)}")
    command = description.load_command(which)
    if command is None:
        raise click.UsageError(f"terminal type {kind!r} has no {which} command")
    return command


class _FamilyCommand(click.Command):
    """`probe` and `emulate`: options belong to each family's own command, so this one takes
    none; its help lists the families the registry knows (read when the help is shown)."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from punchgate.drivers.registry import DRIVERS

        which = self.name or ""
        rows = [
            (d.type_name, d.summary)
            for d in DRIVERS
            if (d.probe_command if which == "probe" else d.emulate_command) is not None
        ]
        with formatter.section("Terminal families (KIND)"):
            formatter.write_dl(rows)
            formatter.write_paragraph()
            formatter.write_text(f"A family's own options: punchgate {which} KIND --help")
        super().format_epilog(ctx, formatter)


def _help_if_asked(ctx: click.Context, first: str) -> None:
    """`punchgate probe --help`: the first argument is the help option, not a URL or a family."""
    if first in HELP:
        click.echo(ctx.get_help(), color=ctx.color)
        ctx.exit(0)


def _logging_hook(*, json: bool | None) -> object:
    """Lets a driver's command log the gateway's way without importing the gateway."""
    from punchgate.drivers.description import LoggingHook
    from punchgate.gateway.logs import configure_logging

    return LoggingHook(lambda level: configure_logging(level, json=json))


@main.command(
    "emulate",
    cls=_FamilyCommand,
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []},
)
@click.argument("kind")
@click.pass_context
def emulate(ctx: click.Context, kind: str) -> None:
    """Run emulated terminals of one family (KIND), for trying punchgate without hardware."""
    _help_if_asked(ctx, kind)
    command = _driver_command(kind, "emulate")
    command.main(args=list(ctx.args), prog_name=f"punchgate emulate {kind}", obj=_logging_hook(json=None))


@main.command(
    "probe",
    cls=_FamilyCommand,
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []},
)
@click.argument("url")
@click.pass_context
def probe(ctx: click.Context, url: str) -> None:
    """Connect to one terminal (zk://HOST:PORT, anviz://…) and print what it says about itself."""
    _help_if_asked(ctx, url)
    from punchgate.drivers.registry import BY_TYPE

    if url in BY_TYPE:  # `punchgate probe zk --help`, `punchgate probe zk zk://…`: a family first
        kind, args = url, list(ctx.args)
    else:
        kind, args = urlsplit(url).scheme, [url, *ctx.args]
    if not kind:
        raise click.UsageError(f"{url!r}: expected a URL such as zk://192.0.2.10:4370")
    command = _driver_command(kind, "probe")
    command.main(args=args, prog_name=f"punchgate probe {kind}", obj=_logging_hook(json=False))


@main.command("status")
@click.option("--config", "-c", "config", type=click.Path(path_type=Path), help="read the API address here")
@click.option("--url", default=None, help="status API base URL (default from config or 127.0.0.1:9108)")
@click.option("--json", "as_json", is_flag=True, help="print the raw JSON")
def status(config: Path | None, url: str | None, as_json: bool) -> None:
    """Show terminals' and the gateway's health from the running daemon; exit 1 when unhealthy."""
    if url is None:
        url = _api_url(_load_or_exit(config, check_files=False) if config else None)
    if not as_json:  # to a pipe or a file: the text the daemon laid out, if it can (issue 18)
        from punchgate.gateway.status_fast import show_plain

        code = show_plain(url)
        if code is not None:
            sys.exit(code)
    from punchgate.gateway.status_cli import show_status

    sys.exit(show_status(url, as_json=as_json))


def _api_url(settings: Settings | None) -> str:
    """The API's base URL from a config: a wildcard bind (0.0.0.0, ::) is reached over loopback,
    because the daemon answers only to Host names of its own (docs/health.md)."""
    if settings is None:
        return "http://127.0.0.1:9108"
    http = settings.http
    host = http.bind.strip("[]")
    if host in ("", "0.0.0.0", "*"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{http.port}" if ":" in host else f"http://{host}:{http.port}"


def _api_token(settings: Settings | None, token_file: Path | None) -> str:
    """The daemon's API token (--token-file, or where the config puts it); exit 2 when unreadable."""
    from punchgate.gateway.token import TokenError, read_token, token_path

    if token_file is None:
        from punchgate.gateway.settings import HttpSettings
        from punchgate.sync.settings import BufferSettings

        http = settings.http if settings else HttpSettings()  # type: ignore[call-arg]
        buffer = settings.buffer if settings else BufferSettings()  # type: ignore[call-arg]
        token_file = token_path(http, buffer)
    try:
        return read_token(token_file)
    except TokenError as exc:
        click.echo(str(exc), err=True)
        sys.exit(EXIT_CONFIG)


@main.command("replay")
@click.option(
    "--since", required=True, help="resend punches delivered since this time (ISO 8601, UTC if no offset)"
)
@click.option("--device", default=None, help="only this terminal's punches")
@click.option(
    "--config",
    "-c",
    "config",
    type=click.Path(path_type=Path),
    help="read the API address and token file here",
)
@click.option("--url", default=None, help="status API base URL (default from config or 127.0.0.1:9108)")
@click.option(
    "--token-file",
    type=click.Path(path_type=Path),
    default=None,
    help="the daemon's API token (default from config, or /var/lib/punchgate/api/token)",
)
def replay(
    since: str, device: str | None, config: Path | None, url: str | None, token_file: Path | None
) -> None:
    """Send already-delivered punches again (e.g. after a broker lost what it acknowledged).

    Needs the daemon's API token: run as the punchgate user or root.
    """
    import datetime as dt

    try:
        when = dt.datetime.fromisoformat(since)
    except ValueError:
        raise click.BadParameter(f"{since!r} is not an ISO 8601 time", param_hint="--since") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    body = {"since": when.isoformat(), "device": device}
    answer = call_api(
        "POST", "/api/replay", body, config=config, url=url, token_file=token_file, refused="replay refused"
    )
    count = answer["requeued"]
    click.echo(f"{count} punches queued to be sent again (delivered since {when.isoformat()})")


@main.command(
    "sink",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []},
)
@click.pass_context
def sink(ctx: click.Context) -> None:
    """The reference central consumer: `punchgate sink run|check` (docs/sink.md)."""
    from punchgate.gateway.logs import configure_logging
    from punchgate.sync.sink.cli import sink as sink_group

    def logging_hook(level: str, json: bool | None) -> None:
        configure_logging(level, json=json)

    sink_group.main(args=list(ctx.args), prog_name="punchgate sink", obj=logging_hook)


@main.command("demo")
@click.option("--duration", type=float, default=0, help="stop after this many seconds (0: until Ctrl-C)")
def demo(duration: float) -> None:
    """Start a private broker, emulated terminals and the gateway, and show punches flowing."""
    from punchgate.gateway.demo import run_demo

    sys.exit(run_demo(duration=duration))


# --- the buffer: check and recover (docs/install.md, "The buffer refuses to start") -------------
@main.group("buffer")
def buffer() -> None:
    """Check the punch buffer, or salvage a damaged one into a new file."""


@buffer.command("check")
@config_option("config file (names the buffer and the gateway)")
def buffer_check(config: Path) -> None:
    """Integrity, counts, identity and companion of the buffer (read-only; the daemon may run).

    Exit 0 when the daemon would start on it and SQLite finds no damage, 1 otherwise.
    """
    from punchgate.sync.buffer_check import check_buffer

    settings = _load_or_exit(config)
    report = check_buffer(settings.buffer.path, gateway_id=settings.gateway_id)
    for line in report.lines():
        click.echo(line)
    sys.exit(0 if report.ok else 1)


@buffer.command("recover")
@config_option("config file (names the buffer and the gateway)")
def buffer_recover(config: Path) -> None:
    """Salvage what SQLite can read into a new buffer file; the old files are kept aside.

    Stop the daemon first (it holds the buffer's lock; recovery refuses while it does).
    Exit 0 when a new file is in place, 1 when nothing was changed.
    """
    from punchgate.sync.buffer_errors import BufferLockedError
    from punchgate.sync.buffer_recover import RecoverError, recover

    settings = _load_or_exit(config)
    try:
        report = recover(settings.buffer.path, gateway_id=settings.gateway_id)
    except BufferLockedError as exc:
        click.echo(f"refusing to recover {exc.path}: {exc.detail}; {exc.remedy}", err=True)
        sys.exit(1)
    except RecoverError as exc:
        click.echo(f"cannot recover: {exc}", err=True)
        sys.exit(1)
    for line in report.lines():
        click.echo(line)
    click.echo("then start the daemon again (systemctl start punchgate)")


# --- the console's accounts (docs/console.md) ----------------------------------------------------
from punchgate.gateway.cli_user import user as _user  # noqa: E402  (it imports this module lazily)

main.add_command(_user)


# --- make-up punches, the audit chain, exports (docs/manual-punches.md, audit.md, export.md) ---
from punchgate.gateway import cli_audit, cli_command, cli_export, cli_punch  # noqa: E402  (they import this module lazily)

main.add_command(cli_punch.punch)
main.add_command(cli_audit.audit)
main.add_command(cli_export.export)
main.add_command(cli_command.command)  # remote commands over MQTT (docs/mqtt-contract.md)
from punchgate.gateway.cli_push import push_command  # noqa: E402  (push-terminal commands, docs/zk-push.md)

main.add_command(push_command)
