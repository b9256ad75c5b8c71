"""Secrets the daemon keeps in files of their own: the API token (punchgate.gateway.token) and the
console's session key (punchgate.gateway.console.keyfile).

Both live in a 0700 folder, in a 0600 regular file owned by the service user, whatever the
umask: read without following a symlink, written to a temporary file that then replaces the old
one. A file that others could read, or that does not hold a valid secret, is replaced (the old
secret counts as known). Each caller keeps its own error class, log event names and rules for the
folder; these functions raise the error class they are given, with a message for a person.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)


class SecretFileError(Exception):
    """A secret's folder or file cannot be used; the message says why, for a person."""


def prepare_folder(
    folder: Path, *, error: type[SecretFileError], tighten: bool, refuse_writable: bool
) -> None:
    """Create `folder` 0700 (its parents too, when missing), or check the one that is there.

    An existing folder must be a folder owned by the service user or root. `tighten`: one of
    ours is set to 0700 when it is looser. `refuse_writable`: otherwise a folder others may write
    to is refused, since someone else could swap the file for one they know.
    """
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=False)
        os.chmod(folder, 0o700)  # mkdir's mode is masked by the umask
        return
    except FileExistsError:
        pass
    except OSError as exc:
        raise error(f"cannot create {folder}: {exc.strerror}") from None
    info = os.stat(folder)  # follows a symlink: what matters is the folder it leads to
    if not stat.S_ISDIR(info.st_mode):
        raise error(f"{folder} is not a folder")
    if info.st_uid not in (os.geteuid(), 0):
        raise error(f"{folder} belongs to uid {info.st_uid}, not to the service user or root")
    if tighten and info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(folder, 0o700)
    elif refuse_writable and stat.S_IMODE(info.st_mode) & 0o022:
        raise error(
            f"{folder} is writable by others (mode {stat.S_IMODE(info.st_mode):04o}); "
            "make it writable by its owner only"
        )


def read_secret(
    path: Path, *, valid: re.Pattern[str], limit: int, error: type[SecretFileError], event: str, holds: str
) -> str | None:
    """The secret in an existing file we can keep; None when it must be (re)written.

    Logs `{event}_replaced` with the reason when the file is there but cannot be kept; `holds`
    names what a good file holds ("a key").
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise error(f"cannot open {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
            raise error(f"{path} is not a regular file owned by the service user")
        if stat.S_IMODE(info.st_mode) & 0o077:
            log.warning(f"{event}_replaced", path=str(path), reason="others could read it")
            return None
        text = os.read(fd, limit).decode("ascii", errors="replace").strip()
    finally:
        os.close(fd)
    if not valid.match(text):
        log.warning(f"{event}_replaced", path=str(path), reason=f"it did not hold {holds}")
        return None
    return text


def write_secret(path: Path, text: str, *, error: type[SecretFileError], event: str) -> None:
    """Write `text` (and a newline) to a new 0600 file that then replaces `path`; logs `{event}_created`."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise error(f"cannot create {path}: {exc.strerror}") from None
    try:
        os.fchmod(fd, 0o600)  # the mode given to open() is masked by the umask
        os.write(fd, (text + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    log.info(f"{event}_created", path=str(path))
