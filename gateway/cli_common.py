"""What the `punchgate` subcommands share: their --config, --buffer and API options, the config
or buffer a command reads, and one call to the running daemon's loopback API with its token.

The config loader and the API's address and token are the ones in punchgate.gateway.cli
(`_load_or_exit`, `_api_url`, `_api_token`), imported when first needed: cli.py imports the
subcommands' modules, and this one, itself.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from punchgate.gateway.settings import Settings

DEFAULT_CONFIG = Path("/etc/punchgate/punchgate.toml")
EXIT_REFUSED = 1
EXIT_UNREACHABLE = 2

F = TypeVar("F", bound=Callable[..., Any])


def config_option(help: str, *, default: Path | None = DEFAULT_CONFIG) -> Callable[[F], F]:
    """--config/-c; with a default (DEFAULT_CONFIG unless told), shown in --help."""
    return click.option(
        "--config",
        "-c",
        "config",
        type=click.Path(path_type=Path),
        default=default,
        show_default=default is not None,
        help=help,
    )


def config_or_buffer_options(command: F) -> F:
    """--config and --buffer, for a command that reads the buffer file: the one given, or the
    config's (DEFAULT_CONFIG's when neither is given). See `settings_unless_buffer`."""
    command = click.option(
        "--buffer",
        type=click.Path(path_type=Path),
        default=None,
        help="the buffer file (default: from the config)",
    )(command)
    return config_option(f"config file (default {DEFAULT_CONFIG})", default=None)(command)


def settings_unless_buffer(
    config: Path | None, buffer: Path | None, *, check_files: bool = False
) -> Settings | None:
    """The config (DEFAULT_CONFIG's when none is named); None when only --buffer is given."""
    from punchgate.gateway.cli import _load_or_exit

    if buffer is not None and config is None:
        return None
    return _load_or_exit(config or DEFAULT_CONFIG, check_files=check_files)


def buffer_path(settings: Settings | None, buffer: Path | None) -> Path:
    """--buffer, or the buffer the config names."""
    if buffer is not None:
        return buffer
    assert settings is not None
    return settings.buffer.path


def api_options(command: F) -> F:
    """--config, --url and --token-file, for a command that calls the daemon (`call_api`)."""
    command = click.option(
        "--token-file",
        type=click.Path(path_type=Path),
        default=None,
        help="the daemon's API token (default from config, or /var/lib/punchgate/api/token)",
    )(command)
    command = click.option(
        "--url", default=None, help="API base URL (default from config or 127.0.0.1:9108)"
    )(command)
    return config_option("read the API address and token file here", default=None)(command)


def call_api(
    method: str,
    path: str,
    body: dict[str, Any] | None,
    *,
    config: Path | None,
    url: str | None,
    token_file: Path | None,
    refused: str = "refused",
) -> Any:
    """One call to the daemon's API with its token; the JSON answer. Exit 1 when the daemon
    refuses (`{refused}: ` and its sentence), 2 when it cannot be reached or the token read."""
    import urllib.error
    import urllib.request

    from punchgate.gateway.cli import _api_token, _api_url, _load_or_exit

    settings = _load_or_exit(config, check_files=False) if config else None  # only [http], [buffer]
    base = (url or _api_url(settings)).rstrip("/")
    token = _api_token(settings, token_file)
    request = urllib.request.Request(
        f"{base}{path}",
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        click.echo(f"{refused}: {exc.read().decode(errors='replace').strip()}", err=True)
        sys.exit(EXIT_REFUSED)
    except (urllib.error.URLError, OSError) as exc:
        click.echo(f"cannot reach the punchgate daemon at {base}: {exc}", err=True)
        sys.exit(EXIT_UNREACHABLE)
