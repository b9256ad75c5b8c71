"""The ZK pool's threads share two glibc malloc arenas, not one each (drivers/zk/arenas.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from punchgate.drivers.zk.arenas import ARENAS, limit_arenas

# In a fresh interpreter (the cap is per process and glibc fixes its own once it is reached):
# the pool's 32 threads each allocate while all of them are alive, then glibc's malloc_info
# lists the arenas (`<heap nr=...>`, the main one included).
_PROBE = textwrap.dedent(
    """
    import ctypes, os, sys, tempfile, threading
    from punchgate.drivers.zk import session

    pool = session._executor()
    barrier = threading.Barrier(session.DEFAULT_POOL_SIZE)

    def allocate() -> int:
        kept = [bytearray(4096) for _ in range(16)]  # past pymalloc: malloc's own arena
        barrier.wait(timeout=30)
        return len(kept)

    futures = [pool.submit(allocate) for _ in range(session.DEFAULT_POOL_SIZE)]
    assert all(f.result(timeout=60) == 16 for f in futures)
    libc = ctypes.CDLL(None)
    libc.fopen.restype = ctypes.c_void_p
    libc.fopen.argtypes = (ctypes.c_char_p, ctypes.c_char_p)
    libc.malloc_info.argtypes = (ctypes.c_int, ctypes.c_void_p)
    libc.fclose.argtypes = (ctypes.c_void_p,)
    path = os.path.join(tempfile.mkdtemp(), "malloc-info.xml")
    stream = libc.fopen(path.encode(), b"w")
    libc.malloc_info(0, stream)
    libc.fclose(stream)
    print(open(path).read().count("<heap nr="))
    """
)


def _arenas(**env: str) -> int:
    environ = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"} | env
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], env=environ, capture_output=True, text=True, timeout=120, check=True
    )
    return int(done.stdout.split()[-1])


def test_the_pool_threads_share_two_arenas() -> None:
    # Without the cap glibc would give them up to eight a core: the environment's setting
    # (what the systemd unit sets) shows what the default does on this machine.
    uncapped = _arenas(MALLOC_ARENA_MAX="64")
    assert uncapped > ARENAS + 1, uncapped
    assert _arenas() <= ARENAS


def test_the_environment_wins() -> None:
    assert limit_arenas({"MALLOC_ARENA_MAX": "4"}) is False
