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

import re
import secrets
from pathlib import Path

from punchgate.gateway import secret_files
from punchgate.gateway.settings import HttpSettings
from punchgate.sync.settings import BufferSettings

DEFAULT_FOLDER = "api"
DEFAULT_NAME = "token"
TOKEN_BYTES = 32  # 256 bits of randomness, 43 characters of URL-safe base64
_VALID = re.compile(r"^[A-Za-z0-9_-]{32,256}$")


class TokenError(secret_files.SecretFileError):
    """The token file cannot be created or read; the message says why, for a person."""


def token_path(http: HttpSettings, buffer: BufferSettings) -> Path:
    """Where the token lives: `[http] token_file`, or `api/token` beside the buffer."""
    if http.token_file is not None:
        return Path(http.token_file)
    return Path(buffer.path).parent / DEFAULT_FOLDER / DEFAULT_NAME


def _is_default_folder(path: Path, buffer: BufferSettings) -> bool:
    return path.parent == Path(buffer.path).parent / DEFAULT_FOLDER


def ensure_token(http: HttpSettings, buffer: BufferSettings) -> tuple[str, Path]:
    """The daemon's token and its file, created on first start; raises TokenError."""
    path = token_path(http, buffer)
    ours = _is_default_folder(path, buffer)
    secret_files.prepare_folder(path.parent, error=TokenError, tighten=ours, refuse_writable=True)
    token = secret_files.read_secret(
        path, valid=_VALID, limit=4096, error=TokenError, event="api_token", holds="a usable token"
    )
    if token is None:
        token = secrets.token_urlsafe(TOKEN_BYTES)
        secret_files.write_secret(path, token, error=TokenError, event="api_token")
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
