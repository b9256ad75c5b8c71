"""A real PostgreSQL server (Debian's package) for tests and benchmarks, in a temporary folder on a
free loopback port.

    server = Postgres()          # finds /usr/lib/postgresql/*/bin (newest); initdb in /tmp
    server.start()
    url = server.create_database("sink")    # postgresql://punchgate@127.0.0.1:PORT/sink
    server.kill(); server.start()           # a crash (immediate shutdown) and a restart
    server.destroy()                        # stop and remove the folder

PostgreSQL refuses to run as root, and tests run as root in CI. Then the cluster belongs to
the `postgres` system user that Debian's package creates, and every server command runs
through `runuser -u postgres`; as any other user it runs as that user. The cluster trusts
local TCP connections from loopback (a throwaway cluster, no password), listens on 127.0.0.1
only and has no Unix socket (`unix_socket_directories = ''`). `available()` says whether the
binaries are installed (`./dev` installs the `postgresql` package when they are not).
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg

from punchgate.gateway.mosquitto import free_port

SUPERUSER = "punchgate"
_started: set[Postgres] = set()


def bin_dir() -> Path | None:
    """The newest installed server's bin folder, or None."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(Path(p).parts[-3].split(".")[0])
    )
    return Path(found[-1]).parent if found else None


def available() -> bool:
    if bin_dir() is None:
        return False
    if os.geteuid() != 0:
        return True
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return False
    return shutil.which("runuser") is not None


class Postgres:
    def __init__(self, *, port: int | None = None) -> None:
        found = bin_dir()
        if found is None:
            raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql, or ./dev setup)")
        self.bin = found
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.root = Path(tempfile.mkdtemp(prefix="punchgate-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._as_root = os.geteuid() == 0
        if self._as_root:
            account = pwd.getpwnam("postgres")
            os.chown(self.root, account.pw_uid, account.pw_gid)
        self._initdb()

    def _command(self, *args: str) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *args] if self._as_root else list(args)

    def _run(self, *args: str, timeout: float = 120) -> None:
        done = subprocess.run(
            self._command(*args), capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args)} failed ({done.returncode}): {done.stderr or done.stdout}\n{self.log_tail()}"
            )

    def _initdb(self) -> None:
        self._run(
            str(self.bin / "initdb"),
            "-D", str(self.data), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"listen_addresses = '{self.host}'\nport = {self.port}\nunix_socket_directories = ''\n"
                "max_connections = 50\nshared_buffers = 64MB\n"
            )

    def start(self) -> Postgres:
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start"
        )
        _started.add(self)
        return self

    def stop(self, mode: str = "fast") -> None:
        """`fast`: a clean shutdown; `immediate`: a crash (recovery at the next start)."""
        if (self.data / "postmaster.pid").exists():
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")
        _started.discard(self)

    def kill(self) -> None:
        self.stop("immediate")

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create database `name` (dropping one of that name) and return its URL."""
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')  # a test's own name, never input
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@atexit.register
def _stop_leftovers() -> None:
    for server in list(_started):
        with contextlib.suppress(Exception):  # best effort at interpreter exit
            server.destroy()
