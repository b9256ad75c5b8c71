"""drain: 400,000 buffered punches to a local mosquitto, acknowledged and marked delivered.

Three contenders start from copies of the same buffer file and a fresh broker each
(`set_tcp_nodelay true`):

* the gateway's own `Forwarder` over the real `Store` (what a site runs);
* a limit probe: bare sqlite3 and aiomqtt, the same 500-record batches and 16 messages in
  flight, acknowledged rows marked with one UPDATE per group of acks (as little code as the
  job allows, so the gap to it is our overhead);
* a naive loop: one QoS 1 publish per punch, wait for its PUBACK, mark that row (one commit
  each). It is timed on a sample (it would take many minutes for 400k) and its rate compared.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections import defaultdict
from pathlib import Path

import aiomqtt

from bench.buffer_fill import buffer_settings, copy_buffer, fill_buffer
from bench.results import BenchResult, Figure
from punchgate.gateway.settings import Settings
from punchgate.sync.forwarder import Forwarder
from punchgate.sync.store import Store
from tests.support.broker import Broker

GATEWAY_ID = "bench-gw"
BATCH = 500
IN_FLIGHT = 16
DEVICES = 200


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")  # the same durability the gateway promises
    return db


def _pending(path: Path) -> int:
    with _connect(path) as db:
        return int(db.execute("SELECT count(*) FROM punches WHERE delivered_at IS NULL").fetchone()[0])


async def _gateway_drain(path: Path, port: int, total: int) -> float:
    settings = Settings.model_validate(
        {
            "gateway_id": GATEWAY_ID,
            "mqtt": {"host": "127.0.0.1", "port": port, "batch_size": BATCH},
            "buffer": buffer_settings(path).model_dump(),
        }
    )
    store = await asyncio.to_thread(Store.open, settings.buffer)
    forwarder = Forwarder(settings, store, version="bench", max_in_flight=IN_FLIGHT)
    started = time.perf_counter()
    task = asyncio.create_task(forwarder.run())
    try:
        while store.pending_count() > 0:
            if task.done():
                task.result()
                raise RuntimeError("the forwarder stopped before the buffer was drained")
            await asyncio.sleep(0.005)
        return time.perf_counter() - started
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.to_thread(store.close)


def _read_pending(db: sqlite3.Connection, after: int, limit: int) -> list[tuple[int, str, str]]:
    query = (
        "SELECT pk, device, payload FROM punches WHERE delivered_at IS NULL AND pk > ? ORDER BY pk LIMIT ?"
    )
    return db.execute(query, (after, limit)).fetchall()


async def _probe_drain(path: Path, port: int) -> float:
    """The limit: read, publish in a window, mark acks in bulk; nothing else."""
    db = _connect(path)
    acked: list[int] = []
    seqs: dict[str, int] = defaultdict(int)
    started = time.perf_counter()
    async with aiomqtt.Client("127.0.0.1", port, max_inflight_messages=IN_FLIGHT + 4) as client:
        client.pending_calls_threshold = 10 * IN_FLIGHT  # a full window is normal here, not a warning
        window = asyncio.Semaphore(IN_FLIGHT)
        tasks: set[asyncio.Task[None]] = set()

        async def publish(topic: str, payload: bytes, pks: list[int]) -> None:
            try:
                await client.publish(topic, payload, qos=1)
            finally:
                window.release()
                tasks.discard(asyncio.current_task())
            acked.extend(pks)

        async def mark() -> None:
            pks = acked[:]
            del acked[: len(pks)]
            if pks:
                marks = ",".join("?" * len(pks))
                sql = f"UPDATE punches SET delivered_at = ? WHERE pk IN ({marks})"
                await asyncio.to_thread(db.execute, sql, [time.time(), *pks])

        after = 0
        marker: asyncio.Task[None] | None = None
        while True:
            rows = await asyncio.to_thread(_read_pending, db, after, BATCH * 10)
            if not rows:
                break
            after = rows[-1][0]
            chunks: dict[str, list[tuple[int, str]]] = defaultdict(list)
            for pk, device, payload in rows:
                chunks[device].append((pk, payload))
            for device, items in chunks.items():
                for start in range(0, len(items), BATCH):
                    part = items[start : start + BATCH]
                    seqs[device] += 1
                    body = (
                        f'{{"schema":"punchgate.punches","version":1,"gateway":"{GATEWAY_ID}",'
                        f'"device":"{device}","seq":{seqs[device]},"records":['
                        + ",".join(p for _, p in part)
                        + "]}"
                    )
                    await window.acquire()
                    topic = f"punchgate/{GATEWAY_ID}/devices/{device}/punches"
                    pks = [k for k, _ in part]
                    tasks.add(asyncio.create_task(publish(topic, body.encode(), pks)))
                    if marker is None or marker.done():
                        marker = asyncio.create_task(mark())
        await asyncio.gather(*tasks)
        if marker is not None:
            await marker
        await mark()
    elapsed = time.perf_counter() - started
    db.close()
    return elapsed


async def _naive_drain(path: Path, port: int, seconds: float) -> tuple[int, float]:
    """One punch per message, wait for each PUBACK, one commit per punch; for `seconds`."""
    db = _connect(path)
    done = 0
    started = time.perf_counter()
    async with aiomqtt.Client("127.0.0.1", port) as client:
        rows = db.execute("SELECT pk, device, payload FROM punches WHERE delivered_at IS NULL ORDER BY pk")
        for pk, device, payload in rows.fetchmany(1_000_000):
            body = (
                f'{{"schema":"punchgate.punches","version":1,"gateway":"{GATEWAY_ID}",'
                f'"device":"{device}","seq":{done + 1},"records":[{payload}]}}'
            )
            await client.publish(f"punchgate/{GATEWAY_ID}/devices/{device}/punches", body.encode(), qos=1)
            db.execute("UPDATE punches SET delivered_at = ? WHERE pk = ?", (time.time(), pk))
            done += 1
            if time.perf_counter() - started >= seconds:
                break
    elapsed = time.perf_counter() - started
    db.close()
    return done, elapsed


def run(workdir: Path, *, quick: bool) -> BenchResult:
    total_wanted = 40_000 if quick else 400_000
    naive_seconds = 10.0 if quick else 30.0
    result = BenchResult(
        name="drain",
        title=f"drain: {total_wanted:,} buffered punches to a local mosquitto",
        command="python -m bench --only drain" + (" --quick" if quick else ""),
        quick=quick,
    )
    source = workdir / "drain-source.db"
    began = time.perf_counter()
    total = fill_buffer(source, devices=DEVICES, per_device=total_wanted // DEVICES)
    result.note(
        f"{total:,} pending punches of {DEVICES} terminals, stored through Store in "
        f"{time.perf_counter() - began:.0f} s (one terminal's log per commit, as full reads store them)"
    )

    def contender(name: str) -> tuple[Path, Broker]:
        broker = Broker()
        broker.start()
        return copy_buffer(source, workdir / f"drain-{name}.db"), broker

    path, broker = contender("gateway")
    try:
        gateway_s = asyncio.run(_gateway_drain(path, broker.port, total))
        assert _pending(path) == 0
    finally:
        broker.close()
    path, broker = contender("probe")
    try:
        probe_s = asyncio.run(_probe_drain(path, broker.port))
        assert _pending(path) == 0, "the probe left punches pending"
    finally:
        broker.close()
    path, broker = contender("naive")
    try:
        naive_done, naive_s = asyncio.run(_naive_drain(path, broker.port, naive_seconds))
    finally:
        broker.close()

    gateway_rate, probe_rate, naive_rate = total / gateway_s, total / probe_s, naive_done / naive_s
    result.note(
        f"gateway drained all {total:,} in {gateway_s:.1f} s, the probe in {probe_s:.1f} s; the naive loop "
        f"delivered {naive_done:,} in {naive_s:.1f} s (would need {total / naive_rate / 60:.0f} min for all)"
    )
    result.add(
        Figure(
            "gateway drain vs limit probe",
            gateway_rate,
            "punches/s",
            goal="≥ 0.5× the probe",
            met=gateway_rate >= 0.5 * probe_rate,
            versus="bare sqlite3 + aiomqtt probe",
            versus_value=probe_rate,
            ratio=gateway_rate / probe_rate,
        )
    )
    result.add(
        Figure(
            "gateway drain vs naive per-punch QoS 1 loop",
            gateway_rate,
            "punches/s",
            goal="≥ 10× the naive loop",
            met=gateway_rate >= 10 * naive_rate,
            versus="naive loop",
            versus_value=naive_rate,
            ratio=gateway_rate / naive_rate,
        )
    )
    for name in ("source", "gateway", "probe", "naive"):
        for suffix in ("", "-wal", "-shm"):
            Path(str(workdir / f"drain-{name}.db") + suffix).unlink(missing_ok=True)
    return result
