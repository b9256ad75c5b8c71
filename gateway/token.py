"""The local API token: a random secret in a file only the service user can read.

Until accounts exist, every state-changing request to the HTTP API (POST /api/replay) must carry
`Authorization: Bearer <token>`. A web page the operator happens to have open cannot read the
file, so it cannot forge such a request; `punchgate replay`, run as the service user or root,
can. The daemon creates the file at its first start and keeps it across restarts.

Where: `[http] token_file`, by default `api/token` in the buffer's folder
(/var/lib/punchgate/api/token). The default folder is the token's alone, so it is made 0700
(and tightened to 0700 if it was looser) without touching the buffer folder, whose mode systemd
manages (StateDirectoryMode). A configured folder is created 0700 when missing; when it exists
it must not be writable by anyone but its owner, and its owner must be the service user or
root, or someone else could swap the file for one they know.

The file: 0600, owned by the service user, a regular file (never followed through a symlink),
whatever the umask. A token file that others could read, or that does not hold a usable token,
is replaced by a new one (the old secret counts as known).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
from pathlib import Path

import structlog

from punchgate.gateway.settings import HttpSettings
from punchgate.sync.settings import BufferSettings

log = structlog.get_logger(__name__)

DEFAULT_FOLDER = "api"
DEFAULT_NAME = "token"
TOKEN_BYTES = 32  # 256 bits of randomness, 43 characters of URL-safe base64
_VALID = re.compile(r"^[A-Za-z0-9_-]{32,256}$")


class TokenError(Exception):
    """The token file cannot be created or read; the message says why, for a person."""


def token_path(http: HttpSettings, buffer: BufferSettings) -> Path:
    """Where the token lives: `[http] token_file`, or `api/token` beside the buffer."""
    if http.token_file is not None:
        return Path(http.token_file)
    return Path(buffer.path).parent / DEFAULT_FOLDER / DEFAULT_NAME


def _is_default_folder(path: Path, buffer: BufferSettings) -> bool:
    return path.parent == Path(buffer.path).parent / DEFAULT_FOLDER


def _prepare_folder(folder: Path, *, ours: bool) -> None:
    """Make sure nobody but the service user (or root) can put a file into `folder`."""
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=False)
        os.chmod(folder, 0o700)  # mkdir's mode is masked by the umask
        return
    except FileExistsError:
        pass
    except OSError as exc:
        raise TokenError(f"cannot create {folder}: {exc.strerror}") from None
    info = os.stat(folder)  # follows a symlink: what matters is the folder it leads to
    if not stat.S_ISDIR(info.st_mode):
        raise TokenError(f"{folder} is not a folder")
    if info.st_uid not in (os.geteuid(), 0):
        raise TokenError(f"{folder} belongs to uid {info.st_uid}, not to the service user or root")
    if ours and info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(folder, 0o700)
    elif stat.S_IMODE(info.st_mode) & 0o022:
        raise TokenError(
            f"{folder} is writable by others (mode {stat.S_IMODE(info.st_mode):04o}); "
            "make it writable by its owner only"
        )


def _read_existing(path: Path) -> str | None:
    """The token in an existing file we can keep; None when it must be (re)written."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise TokenError(f"cannot open {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
            raise TokenError(f"{path} is not a regular file owned by the service user")
        if stat.S_IMODE(info.st_mode) & 0o077:
            log.warning("api_token_replaced", path=str(path), reason="others could read it")
            return None
        text = os.read(fd, 4096).decode("ascii", errors="replace").strip()
    finally:
        os.close(fd)
    if not _VALID.match(text):
        log.warning("api_token_replaced", path=str(path), reason="it did not hold a usable token")
        return None
    return text


def _write_new(path: Path) -> str:
    token = secrets.token_urlsafe(TOKEN_BYTES)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise TokenError(f"cannot create {path}: {exc.strerror}") from None
    try:
        os.fchmod(fd, 0o600)  # the mode given to open() is masked by the umask
        os.write(fd, (token + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    log.info("api_token_created", path=str(path))
    return token


def ensure_token(http: HttpSettings, buffer: BufferSettings) -> tuple[str, Path]:
    """The daemon's token and its file, created on first start; raises TokenError."""
    path = token_path(http, buffer)
    _prepare_folder(path.parent, ours=_is_default_folder(path, buffer))
    token = _read_existing(path)
    if token is None:
        token = _write_new(path)
    return token, path


def read_token(path: Path) -> str:
    """The token as a client reads it (`punchgate replay`); raises TokenError saying what to do."""
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except PermissionError:
        raise TokenError(
            f"cannot read the API token {path}: permission denied; run as the punchgate user or root"
        ) from None
    except FileNotFoundError:
        raise TokenError(
            f"no API token at {path}: the daemon creates it when it first starts "
            "(or pass --token-file / --config to point at another one)"
        ) from None
    except OSError as exc:
        raise TokenError(f"cannot read the API token {path}: {exc.strerror}") from None
    if not _VALID.match(text):
        raise TokenError(f"{path} does not hold an API token")
    return text
