"""`punchgate user add|list|passwd|disable`: the console's accounts, from the shell (docs/console.md).

The accounts live in `console/accounts.db` beside the buffer named by `--config`; these
commands work while the daemon runs (it reads an account at every request, so a change takes
effect at once). Run them as root or the punchgate user: the file is 0600. A password is read
from the terminal twice, or once from standard input with `--password-stdin` (for scripts);
it is never an argument, which `ps` and the shell history would show.

Exit codes: 0 done, 1 refused (a name taken, a password too short, no such account), 2 bad
config or usage.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from punchgate.gateway.cli_common import config_option

CONFIG_OPTION = config_option("config file (names the buffer, beside which the accounts live)")
PASSWORD_STDIN = click.option(
    "--password-stdin", is_flag=True, help="read the password from standard input (one line), for scripts"
)


def _accounts(config: Path, *, create: bool) -> object:
    from punchgate.gateway.cli import _load_or_exit
    from punchgate.gateway.console.accounts import AccountError, Accounts
    from punchgate.gateway.console.keyfile import KeyFileError

    settings = _load_or_exit(config, check_files=False)
    try:
        return Accounts.beside_buffer(settings.buffer.path, create=create)
    except (AccountError, KeyFileError) as exc:
        click.echo(f"cannot use the accounts file: {exc}", err=True)
        sys.exit(1)
    except OSError as exc:
        click.echo(f"cannot use the accounts file: {exc.strerror}: {exc.filename}", err=True)
        sys.exit(1)


def _password(name: str, from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    password: str = click.prompt(
        f"password for {name}", hide_input=True, confirmation_prompt="the same password again"
    )
    return password


def _refused(message: str) -> None:
    click.echo(message, err=True)
    sys.exit(1)


@click.group("user")
def user() -> None:
    """The console's accounts: add, list, change a password, disable."""


@user.command("add")
@click.argument("name")
@click.option(
    "--role",
    type=click.Choice(["viewer", "clerk", "approver", "admin"]),
    required=True,
    help="viewer: overview, punches; clerk: + make-up punches, exports; approver: + approve; admin: + accounts",
)
@CONFIG_OPTION
@PASSWORD_STDIN
def add(name: str, role: str, config: Path, password_stdin: bool) -> None:
    """Create the account NAME with a ROLE and a password."""
    from punchgate.gateway.console.accounts import AccountError, Accounts, check_name

    accounts = _accounts(config, create=True)
    assert isinstance(accounts, Accounts)
    try:
        check_name(name)
        if accounts.get(name) is not None:
            _refused(f"an account named {name!r} exists already (punchgate user passwd {name})")
        account = accounts.add(name, role, _password(name, password_stdin))
    except AccountError as exc:
        _refused(str(exc))
        return
    click.echo(f"account {account.name!r} created, role {account.role}; it can sign in to the console now")


@user.command("list")
@CONFIG_OPTION
def list_accounts(config: Path) -> None:
    """Every account: name, role, enabled or disabled, last sign-in (UTC)."""
    from punchgate.gateway.console.accounts import Accounts

    accounts = _accounts(config, create=False)
    assert isinstance(accounts, Accounts)
    rows = accounts.all()
    if not rows:
        click.echo(f"no accounts in {accounts.path} (punchgate user add NAME --role admin)")
        return
    width = max(len(a.name) for a in rows)
    for a in rows:
        state = "disabled" if a.disabled else "enabled"
        click.echo(f"{a.name:<{width}}  {a.role:<8}  {state:<8}  last sign-in {a.last_login_at or 'never'}")


@user.command("passwd")
@click.argument("name")
@CONFIG_OPTION
@PASSWORD_STDIN
def passwd(name: str, config: Path, password_stdin: bool) -> None:
    """Set a new password for NAME; its open sessions end."""
    from punchgate.gateway.console.accounts import AccountError, Accounts

    accounts = _accounts(config, create=False)
    assert isinstance(accounts, Accounts)
    if accounts.get(name) is None:
        _refused(f"no account named {name!r} (punchgate user list)")
    try:
        accounts.set_password(name, _password(name, password_stdin))
    except AccountError as exc:
        _refused(str(exc))
    click.echo(f"password of {name!r} changed; its sessions have ended")


@user.command("disable")
@click.argument("name")
@click.option("--enable", is_flag=True, help="enable a disabled account again")
@CONFIG_OPTION
def disable(name: str, enable: bool, config: Path) -> None:
    """Disable NAME (it can no longer sign in; its sessions end), or --enable it again."""
    from punchgate.gateway.console.accounts import AccountError, Accounts

    accounts = _accounts(config, create=False)
    assert isinstance(accounts, Accounts)
    try:
        accounts.set_disabled(name, not enable)
    except AccountError as exc:
        _refused(str(exc))
    click.echo(f"account {name!r} {'enabled' if enable else 'disabled'}")
