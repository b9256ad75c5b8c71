"""ingest: one terminal with 100,000 records, read and committed, next to bare pyzk.

The emulated terminal runs in its own process. Bare pyzk (`ZK.connect()` + `get_attendance()`)
and the gateway daemon (`punchgate run`, one terminal, first full read) read the same log from
it; the gateway's time is its own `full_read` log event: from the start of the read until every
punch is normalised and committed (fsynced) to a fresh buffer. Each is run twice, best kept.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from zk import ZK

from bench.emulator_host import EmulatorHost
from bench.results import BenchResult, Figure
from tests.support.broker import Broker
from tests.support.config import write_config, zk_terminal
from tests.support.gateway import GatewayProcess


def _pyzk_read(port: int, expected: int) -> float:
    zk = ZK("127.0.0.1", port=port, timeout=120, ommit_ping=True)
    conn = zk.connect()
    try:
        started = time.perf_counter()
        records = conn.get_attendance()
        elapsed = time.perf_counter() - started
    finally:
        conn.disconnect()
    if len(records) != expected:
        raise RuntimeError(f"pyzk read {len(records)} records, the terminal holds {expected}")
    return elapsed


def _gateway_read(workdir: Path, run: int, port: int, broker_port: int, expected: int) -> float:
    config = write_config(
        workdir / f"ingest-{run}.toml",
        gateway_id="bench-ingest",
        broker_port=broker_port,
        buffer_path=workdir / f"ingest-{run}.db",
        terminals=[zk_terminal("big", port, poll_interval=3600, live=False, timeout=30)],
    )
    gateway = GatewayProcess(config, log_path=workdir / f"gateway-ingest-{run}.log")
    gateway.start()
    try:
        gateway.wait_until(
            lambda: gateway.events("full_read"), timeout=600, interval=0.2, message="a full read"
        )
        read = gateway.events("full_read")[0]
        # `new` can be a little lower than `records`: the generated log has a few exact repeats
        # (same user, second, state and verify), which are one punch by identity.
        if read["records"] != expected or read["new"] < 0.95 * expected:
            raise RuntimeError(f"the gateway read {read['records']} ({read['new']} new) of {expected}")
        return float(read["seconds"])
    finally:
        gateway.stop()


def run(workdir: Path, *, quick: bool) -> BenchResult:
    records = 20_000 if quick else 100_000
    result = BenchResult(
        name="ingest",
        title=f"ingest: one terminal with {records:,} records, read and committed",
        command="python -m bench --only ingest" + (" --quick" if quick else ""),
        quick=quick,
    )
    with contextlib.ExitStack() as cleanup:  # every process started is stopped, whatever fails
        host = EmulatorHost(workdir, count=1, records=records).start()
        cleanup.callback(host.stop)
        broker = Broker(workdir / "broker")
        cleanup.callback(broker.stop)
        broker.start()
        port = host.ports[0]
        pyzk_runs, gateway_runs = [], []
        for n in range(2):
            pyzk_runs.append(_pyzk_read(port, records))
            gateway_runs.append(_gateway_read(workdir, n, port, broker.port, records))
    pyzk_s, gateway_s = min(pyzk_runs), min(gateway_runs)
    result.note(
        f"TFT profile (40-byte records) over TCP; runs: pyzk {', '.join(f'{s:.2f}' for s in pyzk_runs)} s, "
        f"gateway {', '.join(f'{s:.2f}' for s in gateway_runs)} s (best of each compared)"
    )
    result.add(
        Figure(
            "gateway read + normalise + durable commit",
            gateway_s,
            "s",
            goal="≤ 1.3× bare pyzk",
            met=gateway_s <= 1.3 * pyzk_s,
            versus="bare pyzk get_attendance",
            versus_value=pyzk_s,
            ratio=gateway_s / pyzk_s,
        )
    )
    return result
