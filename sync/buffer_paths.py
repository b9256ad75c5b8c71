"""The buffer's files on disk: their names, private permissions, owner, and the lock.

One buffer is a family of files in one folder, all named after the database file:

* `buffer.db` (the SQLite database) with SQLite's own `buffer.db-wal` and `buffer.db-shm`;
* `buffer.db.id`, the companion identity file (`punchgate.sync.buffer_identity`);
* `buffer.db.lock`, which whoever uses the buffer holds an exclusive `flock` on for as long as
  it does (the daemon for its lifetime, `punchgate buffer recover` while it works).

Invariants:

* Punches are personal data: every file of the family is created 0600 and a folder this code
  creates is 0700, whatever the process umask. The database file is created by us (empty,
  0600) before SQLite opens it, because SQLite gives its `-wal` and `-shm` files the mode of
  the database file. Files of an older install that are readable by others are tightened at
  open.
* The lock is advisory and only between punchgate processes: it says "someone is using this
  buffer" so that a recovery never rewrites a file under a running daemon, and two daemons
  never share one buffer. The holder writes its pid into the lock file so the refusal can
  name it. The lock file is never deleted (deleting a lock file races with its next taker).
* A command run as root on a daemon's buffer (`punchgate buffer recover` by an operator)
  leaves the files owned like the folder, so the daemon's own user can still open them.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from punchgate.sync.buffer_errors import BufferLockedError

log = structlog.get_logger(__name__)

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


@dataclass(frozen=True, slots=True)
class BufferPaths:
    """The names of one buffer's files."""

    db: Path

    @property
    def wal(self) -> Path:
        return self.db.with_name(self.db.name + "-wal")

    @property
    def shm(self) -> Path:
        return self.db.with_name(self.db.name + "-shm")

    @property
    def companion(self) -> Path:
        return self.db.with_name(self.db.name + ".id")

    @property
    def lock(self) -> Path:
        return self.db.with_name(self.db.name + ".lock")

    @property
    def folder(self) -> Path:
        return self.db.parent

    def family(self) -> tuple[Path, ...]:
        """Every file of the buffer (present or not)."""
        return (self.db, self.wal, self.shm, self.companion, self.lock)


def private_folder(folder: Path) -> None:
    """Create `folder` 0700 if it is missing (its parents with the defaults); an existing folder
    is left as it is (it may be shared, or managed by systemd's StateDirectoryMode)."""
    if folder.is_dir():
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        folder.mkdir(mode=PRIVATE_DIR)
        os.chmod(folder, PRIVATE_DIR)  # mkdir's mode is masked by the umask; make it exact
    match_owner(folder, folder.parent)


def create_private_file(path: Path) -> None:
    """Create `path` empty with mode 0600 (never an existing file: FileExistsError)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE_FILE)
    try:
        os.fchmod(fd, PRIVATE_FILE)  # the umask may have taken bits away; never adds any
    finally:
        os.close(fd)


def tighten(paths: BufferPaths) -> list[str]:
    """Take group and other permissions off every existing file of the family; the names changed."""
    changed = []
    for path in paths.family():
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode & 0o077:
                os.chmod(path, mode & 0o700)
                changed.append(path.name)
        except FileNotFoundError:
            continue
    return changed


def match_owner(path: Path, like: Path) -> None:
    """Running as root, give `path` the owner and group of `like` (a no-op otherwise)."""
    if os.geteuid() != 0:
        return
    try:
        reference = like.stat()
        os.chown(path, reference.st_uid, reference.st_gid, follow_symlinks=False)
    except FileNotFoundError:
        return


def fsync_folder(folder: Path) -> None:
    """Make a rename or a new file in `folder` durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- the lock -----------------------------------------------------------------------------------
def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None


def _holder_text(pid: int | None) -> str:
    return f"process {pid}" if pid is not None else "another process"


class BufferLock:
    """An exclusive `flock` on the buffer's `.lock` file, held until `release()` (or exit)."""

    def __init__(self, paths: BufferPaths, fd: int) -> None:
        self.paths = paths
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, paths: BufferPaths, *, wait: float = 0.0, purpose: str = "daemon") -> BufferLock:
        """Take the lock, retrying for up to `wait` seconds; `BufferLockedError` naming the
        holder's pid when someone else keeps it."""
        fd = os.open(paths.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE)
        try:
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                        raise
                    if time.monotonic() >= deadline:
                        raise cls._refusal(paths, _read_pid(fd), purpose) from None
                    time.sleep(0.05)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        match_owner(paths.lock, paths.folder)
        return cls(paths, fd)

    @staticmethod
    def _refusal(paths: BufferPaths, pid: int | None, purpose: str) -> BufferLockedError:
        holder = _holder_text(pid)
        if purpose == "daemon":
            return BufferLockedError(
                paths.db,
                f"{holder} is using it (a punchgate daemon, or `punchgate buffer recover`)",
                "two processes must never share one buffer: stop the other one, or give this "
                "gateway its own [buffer] path",
            )
        return BufferLockedError(
            paths.db,
            f"{holder} is using it (the punchgate daemon?)",
            "stop the daemon first (`systemctl stop punchgate`), then run this again",
        )

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None


def lock_holder(paths: BufferPaths) -> int | None:
    """Who holds the buffer's lock right now: its pid (0 when it wrote none), None when nobody
    does. Only looks: a shared probe that never waits (a daemon starting at that instant
    retries for a few seconds, see `BufferLock.acquire`)."""
    try:
        fd = os.open(paths.lock, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            return _read_pid(fd) or 0
        return None
    finally:
        os.close(fd)  # also drops the probe's shared lock
