"""sink: punches stored into PostgreSQL and confirmed, against a bare COPY; gateway drain in
central vs broker delivery. `python -m bench.bench_sink [--quick] [--punches N]` (needs
Debian's postgresql and mosquitto; prints the figures).

1. One sink (`punchgate sink run`, its own process) into a fresh PostgreSQL database: batches
   of 500 records published to a local mosquitto as fast as it takes them, timed from the
   first publish until every punch is in the table *and* its confirmation reached the
   publisher. Against it, the limit probe: psycopg `COPY ... FROM STDIN` of the same rows (the
   rows the sink would write, built beforehand) into the same table of another fresh database.
2. One, two and three sinks in one shared-subscription group, the same stream.
3. The gateway's drain of a full buffer: `broker` delivery (done at the PUBACK) against
   `central` (done when a consumer confirmed; here a minimal consumer that confirms each batch
   as it arrives, so the figure is the gateway's own cost of central delivery). The consumer
   runs on the same two cores: it takes each batch's record ids out of the payload without
   parsing the records (`_ids_of`). A consumer that parses every record (`json.loads` of the
   whole batch, as the bench did before) is measured in the same rounds and shown beside it:
   its 0.35-0.45 s of CPU per 100,000 punches competes with the gateway's delivery-mark writer
   for the cores and is most of the gap between the two figures, not the gateway's own work.

Every figure is the median of `--repeats` runs (at least 3) with their spread and the load
average before and after; a ratio is the median of the runs' own ratios, each run against its
comparison measured in the same round, the order alternating. `--record` keeps the figures
in bench/results.json and docs/performance.md (section "sink").
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import multiprocessing
import os
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from bench import machine
from bench.buffer_fill import buffer_settings, copy_buffer, fill_buffer
from bench.results import BenchResult, Figure, LoadWindow, save_result, write_doc
from punchgate.gateway.settings import Settings
from punchgate.sync.contract import batch_json, record_json
from punchgate.sync.forwarder import Forwarder
from punchgate.sync.sink import db, tables
from punchgate.sync.store import Store
from tests.support.broker import Broker
from tests.support.factories import make_punches
from tests.support.postgres import Postgres
from tests.support.sink import SinkProcess

BATCH = 500
GATEWAY = "gw-bench"
# mosquitto sends a client at most 20 unacknowledged QoS 1 messages by default; a sink
# acknowledges only after its commit, so a bigger window lets it take more per transaction.
BROKER_CONFIG = "max_inflight_messages 200\n"


def _batches(total: int, devices: int = 10) -> list[tuple[str, bytes, list[dict[str, Any]]]]:
    """(topic, payload, records) of `total` punches in batches of BATCH, round robin on devices."""
    per_device = total // devices
    out = []
    for d in range(devices):
        device = f"door-{d}"
        records = [record_json(p) for p in make_punches(device, per_device)]
        for seq, start in enumerate(range(0, per_device, BATCH), start=1):
            chunk = records[start : start + BATCH]
            payload = batch_json(gateway=GATEWAY, device=device, seq=seq, records=chunk)
            out.append(
                (f"punchgate/{GATEWAY}/devices/{device}/punches", payload, [json.loads(r) for r in chunk])
            )
    return out


def _copy(url: str, batches: list[tuple[str, bytes, list[dict[str, Any]]]]) -> float:
    """COPY the rows the sink would write; seconds."""
    columns = [c.name for c in tables.punches.columns]
    now = dt.datetime.now(dt.UTC)
    rows: list[tuple[Any, ...]] = []
    for topic, _payload, records in batches:
        device = topic.split("/")[3]
        batch = db.PunchBatch(f"punchgate/{GATEWAY}", GATEWAY, device, 1, records)
        for record in records:
            values = db.punch_row(batch, record, now)
            values["record"] = json.dumps(record)
            rows.append(tuple(values[c] for c in columns))
    with psycopg.connect(url) as conn:
        started = time.perf_counter()
        with conn.cursor() as cur, cur.copy(f"COPY punches ({', '.join(columns)}) FROM STDIN") as copy:
            for one in rows:
                copy.write_row(one)
        conn.commit()
        return time.perf_counter() - started


class _Publisher:
    """Publishes the batches at QoS 1 and counts the ids confirmed back."""

    def __init__(self, broker: Broker) -> None:
        self.confirmed: set[str] = set()
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-publisher")
        self.client.max_inflight_messages_set(64)
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.subscribe(f"punchgate/{GATEWAY}/confirm", qos=1)
        self.client.loop_start()

    def _on_message(self, _c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        ids = json.loads(message.payload)["ids"]
        with self._lock:
            self.confirmed.update(ids)

    def publish(self, batches: list[tuple[str, bytes, list[dict[str, Any]]]]) -> None:
        for topic, payload, _records in batches:
            self.client.publish(topic, payload, qos=1)

    def count(self) -> int:
        with self._lock:
            return len(self.confirmed)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _stored(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM punches").fetchone()
        return int(row[0]) if row else 0


def _sinks(
    server: Postgres, broker: Broker, work: Path, batches: list[Any], n: int, total: int, run: int
) -> float:
    url = _migrated(server, f"sinks{n}_{run}")
    sinks = [
        SinkProcess(
            broker_port=broker.port,
            db=url,
            client_id=f"bench-sink-{n}-{k}-{run}",
            log=work / f"sink{n}-{k}-{run}.log",
            group=f"bench{n}-{run}",
        )
        for k in range(n)
    ]
    for sink in sinks:
        sink.start()
    try:
        deadline = time.monotonic() + 60
        while not all(s.connected() for s in sinks):
            if time.monotonic() > deadline:
                raise RuntimeError("the sinks did not connect")
            time.sleep(0.05)
        publisher = _Publisher(broker)
        try:
            started = time.perf_counter()
            publisher.publish(batches)
            while publisher.count() < total:
                time.sleep(0.01)
            elapsed = time.perf_counter() - started
            assert _stored(url) == total
            return elapsed
        finally:
            publisher.close()
    finally:
        for sink in sinks:
            sink.stop()


# A record as the gateway renders it starts with its id (`contract_punches.record_json`).
_RECORD_ID = re.compile(rb'\{"id":"([0-9a-f]{32})"')


def _ids_of(payload: bytes, *, parse: bool) -> list[str]:
    """The record ids of a batch message: taken out of the payload as they stand, or (`parse`)
    from every record parsed, as a consumer that stores the records has to."""
    found = [] if parse else [match.decode() for match in _RECORD_ID.findall(payload)]
    # Records rendered another way would leave the drain waiting forever: parse them instead.
    return found or [str(r["id"]) for r in json.loads(payload)["records"]]


def _confirm_forever(host: str, port: int, subscribed: Any, parse: bool, confirm: bool) -> None:
    """The least a consumer can do in central delivery: confirm each batch's ids on arrival
    (`parse`: after parsing every record). Runs in its own process, so it does not share the
    forwarder's interpreter; it does share the machine's cores. Without `confirm` it is the same
    consumer in broker delivery: it takes each batch's ids and confirms nothing."""

    def on_message(client: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        ids = _ids_of(bytes(message.payload), parse=parse)
        if confirm:
            body = {"schema": "punchgate.confirm", "version": 1, "ids": ids}
            client.publish(f"{message.topic.rsplit('/devices/', 1)[0]}/confirm", json.dumps(body), qos=1)

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-confirmer")
    client.max_inflight_messages_set(64)
    client.on_message = on_message
    client.on_subscribe = lambda *_args: subscribed.set()
    client.connect(host, port)
    client.subscribe("punchgate/+/devices/+/punches", qos=1)
    client.loop_forever()


class _Confirmer:
    def __init__(self, broker: Broker, *, parse: bool = False, confirm: bool = True) -> None:
        context = multiprocessing.get_context("spawn")
        subscribed = context.Event()
        self.process = context.Process(
            target=_confirm_forever, args=(broker.host, broker.port, subscribed, parse, confirm)
        )
        self.process.start()
        if not subscribed.wait(30):
            raise RuntimeError("the confirmer did not subscribe")

    def close(self) -> None:
        self.process.terminate()
        self.process.join(10)


async def _drain(path: Path, port: int, delivery: str) -> float:
    settings = Settings.model_validate(
        {
            "gateway_id": GATEWAY,
            "mqtt": {"host": "127.0.0.1", "port": port, "batch_size": BATCH, "delivery": delivery},
            "buffer": buffer_settings(path).model_dump(),
        }
    )
    store = await asyncio.to_thread(Store.open, settings.buffer)
    forwarder = Forwarder(settings, store, version="bench", max_in_flight=16)
    started = time.perf_counter()
    task = asyncio.create_task(forwarder.run())
    try:
        while store.pending_count() > 0:
            if task.done():
                task.result()
                raise RuntimeError("the forwarder stopped")
            await asyncio.sleep(0.005)
        return time.perf_counter() - started
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.to_thread(store.close)


def _sink_rounds(
    server: Postgres, broker: Broker, work: Path, batches: list[Any], total: int, repeats: int
) -> tuple[list[float], list[float], dict[int, list[float]]]:
    """Per round, side by side: the COPY probe and one, two and three sinks (which goes first
    alternates); rates in punches/s: (copy, one sink, {2: ..., 3: ...})."""
    copy_rates: list[float] = []
    sink_rates: dict[int, list[float]] = {1: [], 2: [], 3: []}
    for r in range(repeats):

        def copy_run(r: int = r) -> None:
            copy_rates.append(total / _copy(_migrated(server, f"copy_probe{r}"), batches))

        def one_sink(r: int = r) -> None:
            sink_rates[1].append(total / _sinks(server, broker, work, batches, 1, total, r))

        for measure in (copy_run, one_sink) if r % 2 == 0 else (one_sink, copy_run):
            measure()
        for n in (2, 3):
            sink_rates[n].append(total / _sinks(server, broker, work, batches, n, total, r))
        print(
            f"  round {r + 1}: COPY {copy_rates[-1]:,.0f}/s, sinks "
            + ", ".join(f"{n}: {rates[-1]:,.0f}/s" for n, rates in sink_rates.items()),
            flush=True,
        )
    return copy_rates, sink_rates[1], {n: sink_rates[n] for n in (2, 3)}


# The drains measured side by side: (name, delivery mode, the consumer parses every record, a
# consumer subscribes). Broker delivery drains to the same minimal consumer as central, which
# there only receives: a central system subscribes whatever the delivery mode, and a broker with
# no subscriber discards every message (cheaper for the broker, on the same two cores). "bare"
# is broker delivery with no subscriber, as this benchmark measured it before 2026-12-01.
_DRAINS = (
    ("broker", "broker", False, True),
    ("central", "central", False, True),
    ("parsed", "central", True, True),
    ("bare", "broker", False, False),
)


def _drain_rounds(work: Path, total: int, repeats: int) -> dict[str, list[float]]:
    """Per round, side by side: the gateway's drain of the same full buffer in broker delivery,
    in central delivery, in central delivery with a consumer that parses every record, and in
    broker delivery with no subscriber (the order rotates from round to round); rates in
    punches/s by name (`_DRAINS`)."""
    buffer = work / "full.db"
    fill_buffer(buffer, devices=20, per_device=total // 20)
    # A broker each: a consumer (its own process) must not load the other runs.
    brokers = {name: Broker(work / f"drain-{name}") for name, *_rest in _DRAINS}
    for broker in brokers.values():
        broker.start()
    confirmers = [
        _Confirmer(brokers[name], parse=parse, confirm=mode == "central")
        for name, mode, parse, subscribed in _DRAINS
        if subscribed
    ]
    rates: dict[str, list[float]] = {name: [] for name, *_rest in _DRAINS}
    try:
        for r in range(repeats):
            shift = r % len(_DRAINS)
            for name, mode, _parse, _subscribed in _DRAINS[shift:] + _DRAINS[:shift]:
                copy = copy_buffer(buffer, work / f"{name}{r}.db")
                # The copy's pages on disk first (57 MB dirty after the copy; ~30 ms here), so
                # that no drain shares the disk with the writeback of its own copy.
                os.sync()
                took = asyncio.run(_drain(copy, brokers[name].port, mode))
                rates[name].append(total / took)
                for path in work.glob(f"{name}{r}.db*"):
                    path.unlink(missing_ok=True)
            print(
                f"  round {r + 1}: " + ", ".join(f"{n} {v[-1]:,.0f}/s" for n, v in rates.items()), flush=True
            )
    finally:
        for confirmer in confirmers:
            confirmer.close()
        for broker in brokers.values():
            broker.stop()
    return rates


def run(
    workdir: Path, *, quick: bool, punches: int | None = None, repeats: int = 3, only: str | None = None
) -> BenchResult:
    total = punches or (20_000 if quick else 100_000)
    batches = _batches(total)
    total = sum(len(b[2]) for b in batches)
    command = "python -m bench.bench_sink" + (" --quick" if quick else f" --punches {total}")
    result = BenchResult(
        name="sink",
        title=f"sink: {total:,} punches into PostgreSQL and confirmed; gateway drain in central delivery",
        command=command + (f" --only {only}" if only else ""),
        quick=quick,
    )
    if only != "drain":
        server = Postgres().start()
        broker = Broker(workdir / "broker", extra_config=BROKER_CONFIG)
        broker.start()
        try:
            with LoadWindow() as load:
                copy_rates, one, more = _sink_rounds(server, broker, workdir, batches, total, repeats)
        finally:
            broker.stop()
            server.destroy()
        result.add(
            Figure.of_runs(
                "one sink: stored in PostgreSQL and confirmed",
                one,
                "punches/s",
                versus="bare psycopg COPY of the same rows",
                versus_runs=copy_rates,
                goal="≥ 0.5× COPY",
                check=lambda _value, ratio: ratio is not None and ratio >= 0.5,
                load=load,
            )
        )
        for n, rates in more.items():
            result.add(
                Figure.of_runs(
                    f"{n} sinks in one shared-subscription group",
                    rates,
                    "punches/s",
                    versus="one sink, same round",
                    versus_runs=one,
                    load=load,
                )
            )
        result.note(
            f"{total:,} punches in {len(batches)} batches of {BATCH} records (10 terminals), published at QoS 1 "
            "as fast as the broker takes them; timed from the first publish until every id's confirmation "
            "reached the publisher (and the table holds them all); each run into a fresh database; the COPY "
            "probe copies the rows the sink would write, built beforehand, into the same table of another "
            "fresh database, in the same round"
        )
    if only != "sinks":
        with LoadWindow() as load:
            drains = _drain_rounds(workdir, total, repeats)
        result.add(
            Figure.of_runs(
                "gateway drain, central delivery (done when confirmed)",
                drains["central"],
                "punches/s",
                versus="broker delivery (done at the PUBACK), same buffer, same consumer",
                versus_runs=drains["broker"],
                goal="≥ 0.8× broker delivery",
                check=lambda _value, ratio: ratio is not None and ratio >= 0.8,
                load=load,
            )
        )
        # Beside the goal's figure, without a goal: (title, runs, against, its runs).
        for title, runs, versus, versus_runs in (
            (
                "gateway drain, central delivery, the consumer parsing every record",
                drains["parsed"],
                "broker delivery, same round",
                drains["broker"],
            ),
            (
                "gateway drain, central delivery, against broker delivery to no subscriber",
                drains["central"],
                "broker delivery, nobody subscribed (this figure's method before 2026-12-01)",
                drains["bare"],
            ),
        ):
            result.add(
                Figure.of_runs(title, runs, "punches/s", versus=versus, versus_runs=versus_runs, load=load)
            )
        result.note(
            f"drain: {total:,} pending punches of 20 terminals, the gateway's Forwarder ({BATCH}-record "
            "batches, 16 in flight) to a fresh copy of the buffer per run; central: a minimal consumer (own "
            "process, on the same two cores) confirms each batch's ids as it arrives, taking them out of the "
            "payload without parsing the records; broker: the same consumer takes the ids and confirms "
            "nothing, so the ratio is the gateway's own cost of central delivery (and the confirmations' "
            "trip through the broker); beside it the same with a consumer that parses every record (json.loads of each "
            "batch, 0.35-0.45 s of CPU per 100,000 punches taken from the gateway's two cores); the run "
            "ends when nothing is pending (central: every punch confirmed)"
        )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_sink", description=__doc__.splitlines()[0])
    parser.add_argument("--punches", type=int, default=None, help="default 100,000 (--quick: 20,000)")
    parser.add_argument("--quick", action="store_true", help="20,000 punches")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each measure (the median counts)")
    parser.add_argument("--only", choices=["sinks", "drain"], default=None, help="one part only")
    parser.add_argument("--record", action="store_true", help="keep the figures in docs/performance.md")
    args = parser.parse_args(argv)
    if args.repeats < 3 and args.record:
        parser.error("--record needs at least 3 runs of each measure")
    work = Path(tempfile.mkdtemp(prefix="bench-sink-"))
    load_before = machine.load_average()
    started = time.monotonic()
    try:
        result = run(work, quick=args.quick, punches=args.punches, repeats=args.repeats, only=args.only)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result.seconds = time.monotonic() - started
    result.load_before, result.load_after = load_before, machine.load_average()
    if args.record:
        save_result(result)
        print(f"wrote {write_doc()}")
    return 0


def _migrated(server: Postgres, name: str) -> str:
    """A fresh database `name` with the sink's tables; its URL."""
    url = server.create_database(name)
    engine = db.create(url)
    db.upgrade(engine)
    engine.dispose()
    return url


if __name__ == "__main__":
    raise SystemExit(main())
