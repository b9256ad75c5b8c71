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
import stat
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

FOLDER = "console"
KEY_NAME = "session.key"
ACCOUNTS_NAME = "accounts.db"
KEY_BYTES = 32
_VALID = re.compile(r"^[0-9a-f]{64}$")


class KeyFileError(Exception):
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
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise KeyFileError(f"cannot create {folder}: {exc.strerror}") from None
    info = os.stat(folder)
    if not stat.S_ISDIR(info.st_mode):
        raise KeyFileError(f"{folder} is not a folder")
    if info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(folder, 0o700)
    elif info.st_uid not in (os.geteuid(), 0):
        raise KeyFileError(f"{folder} belongs to uid {info.st_uid}, not to the service user or root")
    give_to_owner_of(folder, folder.parent)
    return folder


def _read_key(path: Path) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise KeyFileError(f"cannot open {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
            raise KeyFileError(f"{path} is not a regular file owned by the service user")
        if stat.S_IMODE(info.st_mode) & 0o077:
            log.warning("console_key_replaced", path=str(path), reason="others could read it")
            return None
        text = os.read(fd, 256).decode("ascii", errors="replace").strip()
    finally:
        os.close(fd)
    if not _VALID.match(text):
        log.warning("console_key_replaced", path=str(path), reason="it did not hold a key")
        return None
    return bytes.fromhex(text)


def _write_key(path: Path) -> bytes:
    key = secrets.token_bytes(KEY_BYTES)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise KeyFileError(f"cannot create {path}: {exc.strerror}") from None
    try:
        os.fchmod(fd, 0o600)  # open()'s mode is masked by the umask
        os.write(fd, (key.hex() + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    log.info("console_key_created", path=str(path))
    return key


def ensure_session_key(buffer_path: Path) -> bytes:
    """The session-signing key, created at first use; raises KeyFileError."""
    path = prepare_folder(console_folder(buffer_path)) / KEY_NAME
    key = _read_key(path)
    return key if key is not None else _write_key(path)
