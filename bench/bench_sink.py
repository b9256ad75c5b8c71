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
   as it arrives, so the figure is the gateway's own cost of central delivery).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import multiprocessing
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from bench.buffer_fill import buffer_settings, copy_buffer, fill_buffer
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


def _confirm_forever(host: str, port: int, subscribed: Any) -> None:
    """The least a consumer can do in central delivery: confirm each batch's ids on arrival.
    Runs in its own process, so it does not share the forwarder's interpreter."""

    def on_message(client: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        batch = json.loads(message.payload)
        body = {"schema": "punchgate.confirm", "version": 1, "ids": [r["id"] for r in batch["records"]]}
        client.publish(f"{message.topic.rsplit('/devices/', 1)[0]}/confirm", json.dumps(body), qos=1)

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-confirmer")
    client.max_inflight_messages_set(64)
    client.on_message = on_message
    client.on_subscribe = lambda *_args: subscribed.set()
    client.connect(host, port)
    client.subscribe("punchgate/+/devices/+/punches", qos=1)
    client.loop_forever()


class _Confirmer:
    def __init__(self, broker: Broker) -> None:
        context = multiprocessing.get_context("spawn")
        subscribed = context.Event()
        self.process = context.Process(target=_confirm_forever, args=(broker.host, broker.port, subscribed))
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_sink", description=__doc__.splitlines()[0])
    parser.add_argument("--punches", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="20,000 punches")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each measure; the best counts")
    parser.add_argument("--only", choices=["sinks", "drain"], default=None, help="one part only")
    args = parser.parse_args(argv)
    total = 20_000 if args.quick else args.punches
    work = Path(tempfile.mkdtemp(prefix="bench-sink-"))
    batches = _batches(total)
    total = sum(len(b[2]) for b in batches)
    server = Postgres().start()
    broker = Broker(work / "broker", extra_config=BROKER_CONFIG)
    broker.start()
    lines: list[str] = []
    try:
        # Best of `repeats`: the machine is shared, and the other load only ever slows a run down.
        if args.only == "drain":
            return _drain_part(args, work, total, lines)
        copy_s = min(_copy(_migrated(server, f"copy_probe{r}"), batches) for r in range(args.repeats))
        lines.append(f"COPY probe: {total} rows in {copy_s:.2f} s = {total / copy_s:,.0f} rows/s")
        one = None
        for n in (1, 2, 3):
            took = min(_sinks(server, broker, work, batches, n, total, r) for r in range(args.repeats))
            rate = total / took
            one = one or rate
            copy_ratio = rate / (total / copy_s)
            lines.append(
                f"{n} sink(s): {total} punches stored and confirmed in {took:.2f} s = {rate:,.0f}/s "
                f"({copy_ratio:.2f}x COPY, {rate / one:.2f}x one sink)"
            )
        if args.only != "sinks":
            _drain_part(args, work, total, lines)
    finally:
        broker.stop()
        server.destroy()
    for line in lines:
        print(line)
    return 0


def _drain_part(args: argparse.Namespace, work: Path, total: int, lines: list[str]) -> int:
    buffer = work / "full.db"
    fill_buffer(buffer, devices=20, per_device=total // 20)
    times = {}
    for delivery in ("broker", "central"):
        fresh = Broker(work / f"drain-{delivery}")
        fresh.start()
        confirmer = _Confirmer(fresh) if delivery == "central" else None
        try:
            times[delivery] = min(
                asyncio.run(_drain(copy_buffer(buffer, work / f"{delivery}{r}.db"), fresh.port, delivery))
                for r in range(args.repeats)
            )
        finally:
            if confirmer is not None:
                confirmer.close()
            fresh.stop()
    for delivery, took in times.items():
        lines.append(
            f"gateway drain, {delivery} delivery: {total} punches in {took:.2f} s = {total / took:,.0f}/s"
        )
    lines.append(f"central/broker drain rate: {times['broker'] / times['central']:.2f}x")
    for line in lines:
        print(line)
    lines.clear()
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
