"""drain: 400,000 buffered punches to a local mosquitto, acknowledged and marked delivered.

Two buffer layouts, each a copy of the same punches of 200 terminals:

* *per terminal*: each terminal's log in one commit after another, as first full reads store
  them;
* *interleaved*: 20 punches of each terminal in turn, as polling through an outage leaves them
  (so a read window of the backlog holds every terminal at once).

On each layout, runs alternate between two contenders (gateway, probe, probe, gateway, ...),
each from a fresh copy of the file and a fresh broker (`set_tcp_nodelay true`):

* the gateway's own `Forwarder` over the real `Store` (what a site runs);
* a limit probe: bare sqlite3 and aiomqtt, the same 500-record batches and 16 messages in
  flight, the same reads (about 10 messages' worth at a time, 500 rows of one terminal per
  query, terminals in the order of their oldest unread row: messages are full on both
  layouts), acknowledged rows marked with one UPDATE per group of acks (as little code as the
  job allows, so the gap to it is our overhead).

Two naive loops are timed for a while each and their rates compared (they would need many
minutes for the whole backlog):

* *per-punch fsync*: one QoS 1 publish per punch, wait for its PUBACK, mark that row with an
  fsynced commit;
* *last-sent timestamp*, as the sync tools sites use work (one request per punch, progress
  kept as the time of the last punch sent): one QoS 1 publish per punch in time order, wait
  for its PUBACK, write the last-sent timestamp to a file, no fsync.

Each figure is the median of 3 runs (`runs`), with the spread; the messages' fill (records per
message) is reported for both contenders on both layouts.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import aiomqtt

from bench.buffer_fill import buffer_settings, copy_buffer, fill_buffer, interleave_buffer
from bench.results import BenchResult, Figure, LoadWindow
from punchgate.gateway.settings import Settings
from punchgate.sync.forwarder import Forwarder
from punchgate.sync.store import Store
from tests.support.broker import Broker

GATEWAY_ID = "bench-gw"
BATCH = 500
IN_FLIGHT = 16
READ_WINDOW = BATCH * 10  # rows per read, the forwarder's read-ahead (READ_AHEAD_BATCHES batches)
DEVICES = 200
PER_COMMIT_INTERLEAVED = 20
RUNS = 3


@dataclass
class Drained:
    seconds: float
    messages: int  # punch messages published


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")  # the same durability the gateway promises
    return db


def _pending(path: Path) -> int:
    with _connect(path) as db:
        return int(db.execute("SELECT count(*) FROM punches WHERE delivered_at IS NULL").fetchone()[0])


async def _gateway_drain(path: Path, port: int) -> Drained:
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
        return Drained(time.perf_counter() - started, forwarder.stats.batches_published)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.to_thread(store.close)


_HEADS = "SELECT pk, device FROM punches WHERE delivered_at IS NULL AND pk > ? ORDER BY pk LIMIT ?"
_OF_DEVICE = (
    "SELECT pk, device, payload FROM punches WHERE delivered_at IS NULL AND device = ? AND pk >= ?"
    " ORDER BY pk LIMIT ?"
)


def _read_pending(
    db: sqlite3.Connection, after: int, limit: int, read_up_to: dict[str, int]
) -> tuple[list[tuple[int, str, str]], int]:
    """The gateway's read, in as little code: terminals in the order of their oldest unread
    pending row, BATCH rows of one terminal per query, about `limit` rows in all."""
    rows: list[tuple[int, str, str]] = []
    db.execute("BEGIN")
    try:
        while len(rows) < limit:
            heads = db.execute(_HEADS, (after, limit)).fetchall()
            if not heads:
                break
            for pk, device in heads:
                if pk <= read_up_to.get(device, 0):
                    after = pk
                    continue
                if len(rows) >= limit:
                    break
                found = db.execute(_OF_DEVICE, (device, pk, BATCH)).fetchall()
                rows.extend(found)
                read_up_to[device] = found[-1][0] if found else pk
                after = pk
            else:
                continue
            break
    finally:
        db.execute("COMMIT")
    return rows, after


async def _probe_drain(path: Path, port: int, *, gateway_id: str = GATEWAY_ID) -> Drained:
    """The limit: read, publish in a window, mark acks in bulk; nothing else."""
    db = _connect(path)
    reader = _connect(path)  # reads in their own transaction, beside the marks (as the gateway)
    acked: list[int] = []
    seqs: dict[str, int] = defaultdict(int)
    messages = 0
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
        read_up_to: dict[str, int] = {}
        marker: asyncio.Task[None] | None = None
        while True:
            rows, after = await asyncio.to_thread(_read_pending, reader, after, READ_WINDOW, read_up_to)
            if not rows:
                break
            chunks: dict[str, list[tuple[int, str]]] = defaultdict(list)
            for pk, device, payload in rows:
                chunks[device].append((pk, payload))
            for device, items in chunks.items():
                for start in range(0, len(items), BATCH):
                    part = items[start : start + BATCH]
                    seqs[device] += 1
                    body = (
                        f'{{"schema":"punchgate.punches","version":1,"gateway":"{gateway_id}",'
                        f'"device":"{device}","seq":{seqs[device]},"records":['
                        + ",".join(p for _, p in part)
                        + "]}"
                    )
                    await window.acquire()
                    topic = f"punchgate/{gateway_id}/devices/{device}/punches"
                    pks = [k for k, _ in part]
                    messages += 1
                    tasks.add(asyncio.create_task(publish(topic, body.encode(), pks)))
                    if marker is None or marker.done():
                        marker = asyncio.create_task(mark())
        await asyncio.gather(*tasks)
        if marker is not None:
            await marker
        await mark()
    elapsed = time.perf_counter() - started
    db.close()
    reader.close()
    return Drained(elapsed, messages)


async def _naive_fsync(path: Path, port: int, seconds: float) -> tuple[int, float]:
    """One punch per message, wait for each PUBACK, one fsynced commit per punch; for `seconds`."""
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


async def _naive_timestamp(path: Path, port: int, progress: Path, seconds: float) -> tuple[int, float]:
    """As sync tools work: punches in time order after the last-sent time (none yet), one
    request (here a QoS 1 publish, waiting for its PUBACK) per punch, the last-sent time
    written to a file after each, no fsync; for `seconds`."""
    db = sqlite3.connect(path, isolation_level=None)
    last_sent = ""
    done = 0
    fd = os.open(progress, os.O_WRONLY | os.O_CREAT, 0o600)
    started = time.perf_counter()
    try:
        async with aiomqtt.Client("127.0.0.1", port) as client:
            rows = db.execute(
                "SELECT device, utc_time, payload FROM punches WHERE utc_time > ? ORDER BY utc_time, pk",
                (last_sent,),
            )
            for device, utc_time, payload in rows.fetchmany(1_000_000):
                body = (
                    f'{{"schema":"punchgate.punches","version":1,"gateway":"{GATEWAY_ID}",'
                    f'"device":"{device}","seq":{done + 1},"records":[{payload}]}}'
                )
                await client.publish(f"punchgate/{GATEWAY_ID}/devices/{device}/punches", body.encode(), qos=1)
                os.pwrite(fd, utc_time.encode().ljust(40), 0)  # progress: the last time sent
                done += 1
                if time.perf_counter() - started >= seconds:
                    break
    finally:
        os.close(fd)
        db.close()
    return done, time.perf_counter() - started


def _fresh(workdir: Path, source: Path, name: str) -> tuple[Path, Broker]:
    broker = Broker()
    broker.start()
    return copy_buffer(source, workdir / f"drain-{name}.db"), broker


def _drain_runs(workdir: Path, source: Path, total: int) -> tuple[list[Drained], list[Drained]]:
    """RUNS drains each of the gateway and the probe, alternating which goes first."""
    gateway_runs: list[Drained] = []
    probe_runs: list[Drained] = []
    for n in range(RUNS):
        order = ("gateway", "probe") if n % 2 == 0 else ("probe", "gateway")
        for name in order:
            path, broker = _fresh(workdir, source, name)
            try:
                if name == "gateway":
                    gateway_runs.append(asyncio.run(_gateway_drain(path, broker.port)))
                else:
                    probe_runs.append(asyncio.run(_probe_drain(path, broker.port)))
                left = _pending(path)
                if left:
                    raise RuntimeError(f"the {name} left {left:,} of {total:,} punches pending")
            finally:
                broker.close()
    return gateway_runs, probe_runs


def _naive_runs(workdir: Path, source: Path, seconds: float) -> tuple[list[float], list[float]]:
    """RUNS of each naive loop (alternating); their rates in punches/s."""
    fsync_rates: list[float] = []
    timestamp_rates: list[float] = []
    for n in range(RUNS):
        order = ("fsync", "timestamp") if n % 2 == 0 else ("timestamp", "fsync")
        for name in order:
            path, broker = _fresh(workdir, source, f"naive-{name}")
            try:
                if name == "fsync":
                    done, elapsed = asyncio.run(_naive_fsync(path, broker.port, seconds))
                    fsync_rates.append(done / elapsed)
                else:
                    progress = workdir / "naive-progress.txt"
                    progress.unlink(missing_ok=True)
                    done, elapsed = asyncio.run(_naive_timestamp(path, broker.port, progress, seconds))
                    timestamp_rates.append(done / elapsed)
            finally:
                broker.close()
    return fsync_rates, timestamp_rates


def _fill(drained: list[Drained], total: int) -> str:
    return f"{total * len(drained) / sum(d.messages for d in drained):.0f}"


def run(workdir: Path, *, quick: bool) -> BenchResult:
    total_wanted = 40_000 if quick else 400_000
    naive_seconds = 5.0 if quick else 20.0
    result = BenchResult(
        name="drain",
        title=f"drain: {total_wanted:,} buffered punches to a local mosquitto, two buffer layouts",
        command="python -m bench --only drain" + (" --quick" if quick else ""),
        quick=quick,
    )
    source = workdir / "drain-source.db"
    began = time.perf_counter()
    total = fill_buffer(source, devices=DEVICES, per_device=total_wanted // DEVICES)
    interleaved = interleave_buffer(
        source, workdir / "drain-interleaved.db", per_commit=PER_COMMIT_INTERLEAVED
    )
    result.note(
        f"{total:,} pending punches of {DEVICES} terminals, stored through Store in "
        f"{time.perf_counter() - began:.0f} s; per terminal: one terminal's log per commit; interleaved: "
        f"the same rows, {PER_COMMIT_INTERLEAVED} of each terminal in turn"
    )
    gateway_rates: list[float] = []
    for layout, source_file in (("per terminal", source), ("interleaved", interleaved)):
        with LoadWindow() as load:
            gateway_runs, probe_runs = _drain_runs(workdir, source_file, total)
        rates = [total / d.seconds for d in gateway_runs]
        if layout == "per terminal":
            gateway_rates = rates
        result.add(
            Figure.of_runs(
                f"gateway drain vs limit probe, {layout}",
                rates,
                "punches/s",
                versus="bare sqlite3 + aiomqtt probe",
                versus_runs=[total / d.seconds for d in probe_runs],
                goal="≥ 0.8× the probe",
                check=lambda _value, ratio: ratio is not None and ratio >= 0.8,
                load=load,
            )
        )
        result.note(
            f"{layout}: gateway {', '.join(f'{d.seconds:.2f}' for d in gateway_runs)} s, "
            f"probe {', '.join(f'{d.seconds:.2f}' for d in probe_runs)} s; records per message: "
            f"gateway {_fill(gateway_runs, total)}, probe {_fill(probe_runs, total)} (batch size {BATCH})"
        )
    with LoadWindow() as load:
        fsync_rates, timestamp_rates = _naive_runs(workdir, source, naive_seconds)
    for label, naive in (
        ("naive loop, a publish and an fsynced commit per punch", fsync_rates),
        (
            "naive loop as sync tools work (a publish per punch, last-sent timestamp, no fsync)",
            timestamp_rates,
        ),
    ):
        result.add(
            Figure.of_runs(
                f"gateway drain (per terminal) vs {label}",
                gateway_rates,
                "punches/s",
                versus="naive loop",
                versus_runs=naive,
                goal="≥ 10× the naive loop",
                check=lambda _value, ratio: ratio is not None and ratio >= 10,
                load=load,
            )
        )
    result.note(
        f"naive loops timed {naive_seconds:.0f} s per run: per-punch fsync "
        f"{', '.join(f'{r:,.0f}' for r in fsync_rates)} punches/s; last-sent timestamp "
        f"{', '.join(f'{r:,.0f}' for r in timestamp_rates)} punches/s (the gateway's runs are the per-terminal "
        "drains above, paired run for run)"
    )
    for path in workdir.glob("drain-*.db*"):
        path.unlink(missing_ok=True)
    return result
