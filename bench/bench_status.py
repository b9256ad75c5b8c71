"""status: `/metrics`, `/api/devices` and `punchgate status` with 1,000,000 punches pending.

A buffer holding 1,000,000 pending punches of 500 terminals is written by raw SQL into a file
the store created (`--quick`: 200,000). The real daemon (`punchgate run`) opens it with those
500 terminals configured (they point at closed loopback ports: the workers fail and back off,
which the status then shows), and no broker answers (so every punch stays pending); beside
it, in turn, the same daemon with the same terminals and an empty buffer. In each of 3 rounds, each daemon is started and the same HTTP client asks it
for `/metrics`, `/api/devices` and `/healthz` (the trivial request) in turn, 20 times each,
and the `punchgate status` command is timed 7 times against `punchgate --version` run just
before it (the same interpreter start-up and imports, no request). Each figure is the median of the rounds'
medians, with the spread; the ratio is against the empty buffer, measured in the same round:
what the pending punches cost, apart from what 500 terminals cost.

Both commands run with their bytecode cached (a PYTHONPYCACHEPREFIX in the work directory,
written by a first, untimed run of each), as an installed punchgate runs: pip compiles the
wheel's modules. Without it (PYTHONDONTWRITEBYTECODE, as in some dev shells) every run compiles
every module it imports from source, and `punchgate status` imports some `--version` does not.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from bench.results import BenchResult, Figure, LoadWindow
from punchgate.sync.settings import BufferSettings
from punchgate.sync.store import Store
from tests.support.broker import free_port
from tests.support.config import write_config, zk_terminal
from tests.support.gateway import GatewayProcess

ROUNDS = 3
REQUESTS = 20
# `punchgate status` / `--version` pairs per round. The figure is the median of the pairs'
# differences: two runs of ~0.4 s each (the interpreter and punchgate's imports) differ by
# +-30 ms from run to run on this machine, so 7 pairs could not resolve a 20 ms goal.
COMMANDS = 25
TERMINALS = 500


def fill_raw(path: Path, rows: int, terminals: int) -> None:
    """`rows` pending punches of `terminals` terminals in a store-created file, by raw SQL."""
    Store.open(BufferSettings.model_validate({"path": str(path), "min_free_disk_mb": 0})).close()
    payload = '{"id":"x"}'
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("PRAGMA synchronous = OFF")
        db.execute(
            """
            WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < ?)
            INSERT INTO punches (id, device, user_id, utc_time, source, payload, raw, stored_at)
            SELECT printf('%032x', x), printf('t%03d', x % ?), '7',
                   '2024-03-04T07:00:00+00:00', 'poll', ?, x'00', 1700000000 + x FROM n
            """,
            (rows, terminals, payload),
        )


def _get(url: str) -> float:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as response:
        response.read()
    return time.perf_counter() - started


def _command(pycache: Path, *args: str) -> tuple[float, float]:
    """(wall, CPU) seconds of one punchgate command. The CPU time (the child's own, user and
    system) hardly depends on what else the machine runs; the wall time does."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "", "PYTHONPYCACHEPREFIX": str(pycache)}
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-m", "punchgate.gateway", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    _pid, _status, usage = os.wait4(child.pid, 0)
    child.returncode = 0  # reaped by wait4: Popen must not wait for it again
    return time.perf_counter() - started, usage.ru_utime + usage.ru_stime


def run(workdir: Path, *, quick: bool) -> BenchResult:
    rows = 200_000 if quick else 1_000_000
    result = BenchResult(
        name="status",
        title=f"status: /metrics, /api/devices and punchgate status with {rows:,} punches pending",
        command="python -m bench --only status" + (" --quick" if quick else ""),
        quick=quick,
    )
    buffer = workdir / "status.db"
    began = time.monotonic()
    fill_raw(buffer, rows, TERMINALS)
    result.note(
        f"{rows:,} pending punches of {TERMINALS} terminals written by raw SQL in {time.monotonic() - began:.0f} s; "
        f"the daemon has those {TERMINALS} terminals configured (unreachable); per round and daemon, {REQUESTS} "
        f"requests of each kind in turn and {COMMANDS} `punchgate status` commands, each after `punchgate --version`"
    )
    empty = workdir / "empty.db"
    Store.open(BufferSettings.model_validate({"path": str(empty), "min_free_disk_mb": 0})).close()
    names = ("metrics", "devices", "healthz", "extra", "extra_cpu")
    timings: dict[str, dict[str, list[float]]] = {b: {n: [] for n in names} for b in ("full", "empty")}
    # No broker answers (a closed port), so the punches stay pending however long it takes.
    broker_port = free_port()
    with LoadWindow() as load:
        for n in range(ROUNDS):
            order = [("full", buffer), ("empty", empty)]
            for which, path in order if n % 2 == 0 else order[::-1]:
                for name, value in _round(workdir, broker_port, path, f"{which}-{n}").items():
                    timings[which][name].append(value)
    full, base = timings["full"], timings["empty"]
    for label, name in (
        ("GET /metrics", "metrics"),
        ("GET /api/devices", "devices"),
        ("GET /healthz", "healthz"),
    ):
        result.add(
            Figure.of_runs(
                f"{label}, {TERMINALS} terminals",
                full[name],
                "ms",
                versus="the same, empty buffer",
                versus_runs=base[name],
                goal="" if name == "healthz" else "≤ 20 ms",
                check=None if name == "healthz" else (lambda value, _ratio: value <= 20),
                load=load,
            )
        )
    result.add(
        Figure.of_runs(
            "punchgate status beyond its start-up (vs punchgate --version)",
            full["extra"],
            "ms",
            versus="the same, empty buffer",
            versus_runs=base["extra"],
            goal="≤ 20 ms",
            check=lambda value, _ratio: value <= 20,
            load=load,
        )
    )
    result.add(
        Figure.of_runs(
            "punchgate status: its CPU time beyond punchgate --version's",
            full["extra_cpu"],
            "ms",
            versus="the same, empty buffer",
            versus_runs=base["extra_cpu"],
            load=load,
        )
    )
    return result


def _round(workdir: Path, broker_port: int, buffer: Path, tag: str) -> dict[str, float]:
    """One daemon on `buffer`: the medians (ms) of each request, and of `punchgate status`
    beyond `punchgate --version`."""
    port = free_port()
    closed: list[int] = []
    while len(closed) < TERMINALS:  # each terminal its own address (the config insists)
        candidate = free_port()
        if candidate not in closed and candidate not in (port, broker_port):
            closed.append(candidate)
    config = write_config(
        workdir / f"status-{tag}.toml",
        gateway_id="bench-status",
        broker_port=broker_port,
        buffer_path=buffer,
        http_port=port,
        terminals=[
            zk_terminal(f"t{n:03d}", p, poll_interval=60, live=False, timeout=1) for n, p in enumerate(closed)
        ],
    )
    gateway = GatewayProcess(config, log_path=workdir / f"gateway-status-{tag}.log")
    try:
        gateway.start(ready_timeout=120)
        base = f"http://127.0.0.1:{port}"
        _get(f"{base}/metrics")  # warm: the first request loads what it needs
        times: dict[str, list[float]] = {
            name: [] for name in ("metrics", "devices", "healthz", "extra", "extra_cpu")
        }
        for _ in range(REQUESTS):
            times["metrics"].append(_get(f"{base}/metrics"))
            times["devices"].append(_get(f"{base}/api/devices"))
            times["healthz"].append(_get(f"{base}/healthz"))
        pycache = workdir / "pycache"
        _command(pycache, "--version")  # untimed: writes the bytecode cache (see the docstring)
        _command(pycache, "status", "--url", base)
        for _ in range(COMMANDS):
            version = _command(pycache, "--version")
            status = _command(pycache, "status", "--url", base)
            times["extra"].append(status[0] - version[0])
            times["extra_cpu"].append(status[1] - version[1])
        return {name: statistics.median(values) * 1000 for name, values in times.items()}
    finally:
        gateway.stop()
