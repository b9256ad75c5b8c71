"""The console's accounts: names, roles, argon2 password hashes, in a small SQLite file.

Why a file of its own (`console/accounts.db` beside the buffer) and not a table in the buffer:
the daemon holds an exclusive lock on the buffer from start to stop, so `punchgate user add`
could not write there while it runs; accounts are the gateway's concern, not the punch
pipeline's (`punchgate.sync` stays free of them); and a copied or recovered buffer carries no
password hashes. SQLite lets the CLI and the daemon use the file at once; the daemon reads an
account at every request, so a disabled account or a changed password takes effect at once.

Roles, each with what it may do (`PERMISSIONS`; docs/console.md):

    viewer    overview, terminals, punches
    clerk     + enter make-up punches, exports
    approver  + approve or reject make-up punches (never their own), the audit page
    admin     + accounts, commands, replay

Invariants: a name is unique without regard to case; a password is stored only as an argon2id
hash (argon2-cffi's defaults, upgraded at the next sign-in when they change); `generation`
counts up whenever the password, the role or the disabled flag changes, and a session carries
the generation it was signed for, so such a change ends every session of that account.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from punchgate.gateway.console.keyfile import ACCOUNTS_NAME, console_folder, give_to_owner_of, prepare_folder

Role = Literal["viewer", "clerk", "approver", "admin"]
ROLES: tuple[Role, ...] = get_args(Role)
Permission = Literal["view", "manual_enter", "export", "manual_decide", "audit", "accounts", "commands"]

PERMISSIONS: dict[Role, frozenset[Permission]] = {
    "viewer": frozenset({"view"}),
    "clerk": frozenset({"view", "manual_enter", "export"}),
    "approver": frozenset({"view", "manual_enter", "export", "manual_decide", "audit"}),
    "admin": frozenset({"view", "manual_enter", "export", "manual_decide", "audit", "accounts", "commands"}),
}

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
MIN_PASSWORD = 10
MAX_PASSWORD = 256  # argon2 takes any length; a bound keeps a request from hashing megabytes
SCHEMA_VERSION = 1

_hasher = PasswordHasher()
# Checked against when the name is unknown, so that takes as long as a wrong password.
_DUMMY_HASH = _hasher.hash("not a password of anyone")


class AccountError(Exception):
    """A request about accounts that cannot be done; the message says why, for a person."""


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    role: Role
    disabled: bool
    generation: int
    created_at: str
    password_changed_at: str
    last_login_at: str | None

    def may(self, permission: Permission) -> bool:
        return not self.disabled and permission in PERMISSIONS[self.role]


def check_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise AccountError(
            f"{name[:70]!r} is not an account name: 1-64 letters, digits, '_', '.', '@', '-', "
            "starting with a letter or digit"
        )
    return name


def check_password(name: str, password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"the password must have at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise AccountError(f"the password must have at most {MAX_PASSWORD} characters")
    if password.strip().lower() == name.lower():
        raise AccountError("the password must not be the account name")
    return password


def check_role(role: str) -> Role:
    if role not in ROLES:
        raise AccountError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    return role


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def accounts_path(buffer_path: Path) -> Path:
    return console_folder(buffer_path) / ACCOUNTS_NAME


class Accounts:
    """The accounts file. Every method opens its own short connection: callers are threads."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @classmethod
    def beside_buffer(cls, buffer_path: Path, *, create: bool = True) -> Accounts:
        accounts = cls(accounts_path(buffer_path))
        if create:
            prepare_folder(accounts.path.parent)
            accounts.create()
        return accounts

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=5, isolation_level=None)
        try:
            conn.execute("PRAGMA foreign_keys = ON")
            yield conn
        finally:
            conn.close()

    def create(self) -> None:
        """Create the file (0600) and its table when missing; the caller prepared the folder."""
        fresh = not self.path.exists()
        if fresh:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            os.fchmod(fd, 0o600)
            os.close(fd)
            give_to_owner_of(self.path, self.path.parent)
        with self._connect() as conn:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise AccountError(f"{self.path} was written by a newer punchgate (version {version})")
            if version < 1:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(
                    """
                    CREATE TABLE IF NOT EXISTS accounts (
                        name TEXT PRIMARY KEY COLLATE NOCASE,
                        role TEXT NOT NULL CHECK (role IN ('viewer', 'clerk', 'approver', 'admin')),
                        hash TEXT NOT NULL,              -- argon2id, PHC string
                        disabled INTEGER NOT NULL DEFAULT 0,
                        generation INTEGER NOT NULL DEFAULT 1,  -- +1 at every password/role/disable change
                        created_at TEXT NOT NULL,        -- UTC, ISO 8601 with Z
                        password_changed_at TEXT NOT NULL,
                        last_login_at TEXT
                    )
                    """
                )
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                conn.execute("COMMIT")

    # --- reading -------------------------------------------------------------------------------
    _COLUMNS = "name, role, disabled, generation, created_at, password_changed_at, last_login_at"

    @staticmethod
    def _account(row: tuple[object, ...]) -> Account:
        name, role, disabled, generation, created, changed, last = row
        return Account(
            str(name),
            check_role(str(role)),
            bool(disabled),
            int(str(generation)),
            str(created),
            str(changed),
            None if last is None else str(last),
        )

    def get(self, name: str) -> Account | None:
        if not self.path.exists():
            return None
        with self._connect() as conn:
            row = conn.execute(f"SELECT {self._COLUMNS} FROM accounts WHERE name = ?", (name,)).fetchone()
        return None if row is None else self._account(row)

    def all(self) -> list[Account]:
        if not self.path.exists():
            return []
        with self._connect() as conn:
            rows = conn.execute(f"SELECT {self._COLUMNS} FROM accounts ORDER BY name").fetchall()
        return [self._account(row) for row in rows]

    def count(self) -> int:
        if not self.path.exists():
            return 0
        with self._connect() as conn:
            return int(conn.execute("SELECT count(*) FROM accounts").fetchone()[0])

    # --- changing ------------------------------------------------------------------------------
    def add(self, name: str, role: str, password: str) -> Account:
        check_name(name)
        check_role(role)
        check_password(name, password)
        digest = _hasher.hash(password)
        now = _now()
        with self._connect() as conn:
            try:
                conn.execute(
                    "INSERT INTO accounts (name, role, hash, created_at, password_changed_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (name, role, digest, now, now),
                )
            except sqlite3.IntegrityError:
                raise AccountError(f"an account named {name!r} exists already") from None
        account = self.get(name)
        assert account is not None
        return account

    def set_password(self, name: str, password: str) -> Account:
        check_password(name, password)
        return self._change(
            name,
            "hash = ?, password_changed_at = ?, generation = generation + 1",
            (_hasher.hash(password), _now()),
        )

    def set_disabled(self, name: str, disabled: bool) -> Account:
        return self._change(name, "disabled = ?, generation = generation + 1", (int(disabled),))

    def set_role(self, name: str, role: str) -> Account:
        return self._change(name, "role = ?, generation = generation + 1", (check_role(role),))

    def _change(self, name: str, assignments: str, values: tuple[object, ...]) -> Account:
        with self._connect() as conn:
            changed = conn.execute(
                f"UPDATE accounts SET {assignments} WHERE name = ?", (*values, name)
            ).rowcount
        if not changed:
            raise AccountError(f"no account named {name!r}")
        account = self.get(name)
        assert account is not None
        return account

    # --- signing in ----------------------------------------------------------------------------
    def verify(self, name: str, password: str) -> tuple[Account | None, str]:
        """(the account, "ok") when `password` is right and the account enabled; otherwise
        (None or the account, the reason: unknown, wrong_password, disabled). Takes about as
        long whatever the outcome (an unknown name is checked against a stand-in hash)."""
        row = None
        if self.path.exists() and NAME_PATTERN.fullmatch(name) and len(password) <= MAX_PASSWORD:
            with self._connect() as conn:
                row = conn.execute(
                    f"SELECT {self._COLUMNS}, hash FROM accounts WHERE name = ?", (name,)
                ).fetchone()
        digest = str(row[-1]) if row is not None else _DUMMY_HASH
        try:
            _hasher.verify(digest, password[:MAX_PASSWORD])
            right = row is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            right = False
        if row is None:
            return None, "unknown"
        account = self._account(row[:-1])
        if not right:
            return account, "wrong_password"
        if account.disabled:
            return account, "disabled"
        with self._connect() as conn:
            if _hasher.check_needs_rehash(digest):
                conn.execute("UPDATE accounts SET hash = ? WHERE name = ?", (_hasher.hash(password), name))
            conn.execute("UPDATE accounts SET last_login_at = ? WHERE name = ?", (_now(), name))
        return account, "ok"
