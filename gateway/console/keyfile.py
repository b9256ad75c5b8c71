"""The console's folder beside the buffer, and the secret its session cookies are signed with.

Where: `console/` in the buffer's folder (/var/lib/punchgate/console/), made 0700, holding
`accounts.db` (punchgate.gateway.console.accounts) and `session.key`. The key is 32 random
bytes, hex, in a 0600 regular file owned by the service user; it is created at the first start
and kept across restarts, so a restart does not sign everybody out. A key file that others
could read, or that does not hold a key, is replaced (every session signed with it ends).

`punchgate user add`, run as root, creates the folder and the accounts file too: they are then
given to the owner of the buffer's folder (the service user), so the daemon can use them.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from pathlib import Path

from punchgate.gateway import secret_files

FOLDER = "console"
KEY_NAME = "session.key"
ACCOUNTS_NAME = "accounts.db"
KEY_BYTES = 32
_VALID = re.compile(r"^[0-9a-f]{64}$")


class KeyFileError(secret_files.SecretFileError):
    """The console's folder or key cannot be used; the message says why, for a person."""


def console_folder(buffer_path: Path) -> Path:
    return Path(buffer_path).parent / FOLDER


def give_to_owner_of(path: Path, like: Path) -> None:
    """When run as root: hand `path` to the owner of `like` (the service user's state folder)."""
    if os.geteuid() != 0:
        return
    with contextlib.suppress(OSError):
        info = os.stat(like)
        if info.st_uid != 0:
            os.chown(path, info.st_uid, info.st_gid, follow_symlinks=False)


def prepare_folder(folder: Path) -> Path:
    """Create `folder` 0700 (its parent too, when missing); tighten it to 0700 when it is ours."""
    secret_files.prepare_folder(folder, error=KeyFileError, tighten=True, refuse_writable=False)
    give_to_owner_of(folder, folder.parent)
    return folder


def ensure_session_key(buffer_path: Path) -> bytes:
    """The session-signing key, created at first use; raises KeyFileError."""
    path = prepare_folder(console_folder(buffer_path)) / KEY_NAME
    text = secret_files.read_secret(
        path, valid=_VALID, limit=256, error=KeyFileError, event="console_key", holds="a key"
    )
    if text is None:
        text = secrets.token_bytes(KEY_BYTES).hex()
        secret_files.write_secret(path, text, error=KeyFileError, event="console_key")
    return bytes.fromhex(text)
