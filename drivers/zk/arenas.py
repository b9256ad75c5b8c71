"""glibc's malloc arenas for the ZK pool's threads: two in all, not eight a core.

glibc gives each new thread that allocates an arena of its own, up to eight a core (16 on a
two-core box), and each arena keeps what its threads freed for their own later use. The ZK
pool's 32 threads read the terminals' logs (buffers too large for Python's own allocator go to
malloc), so a fleet's daemon held most of those arenas' free space for good. Measured on a
restarted 1,000-terminal daemon (in process, twice each): thread arenas 29-30 MiB with the
default, 12-14 MiB with two; peak RSS 204-208 MiB against 187-188 MiB. The threads mostly wait
on sockets or on the GIL, so two arenas are not contended in any way that shows.

`MALLOC_ARENA_MAX` in the environment wins (the systemd unit sets it, which also covers the
threads started before the pool); this covers a daemon started any other way (a shell, the
benchmarks). It must run before glibc fixes its own limit, i.e. before the ninth arena
exists: `session._executor` calls it as it creates the pool, before that pool's threads.
"""

from __future__ import annotations

import ctypes
import os
import threading
from typing import Final

import structlog

log = structlog.get_logger(__name__)

ARENAS: Final = 2
_M_ARENA_MAX: Final = -8  # glibc's malloc.h
_done = False
_guard = threading.Lock()


def limit_arenas(environ: dict[str, str] | None = None) -> bool:
    """Cap glibc's malloc arenas at `ARENAS` once per process, unless `MALLOC_ARENA_MAX` is set
    or this is not glibc. True when this call set the cap."""
    global _done
    env = os.environ if environ is None else environ
    with _guard:
        if _done or env.get("MALLOC_ARENA_MAX"):
            return False
        _done = True
        try:
            libc = ctypes.CDLL(None)
            libc.gnu_get_libc_version  # noqa: B018 - only glibc has it (and M_ARENA_MAX)
            mallopt = libc.mallopt
        except (OSError, AttributeError):
            return False
        mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        mallopt.restype = ctypes.c_int
        if mallopt(_M_ARENA_MAX, ARENAS) != 1:
            log.warning("malloc_arenas_not_limited", arenas=ARENAS)
            return False
        return True
