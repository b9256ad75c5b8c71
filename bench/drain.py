"""Drain benchmark: 200,000 buffered punches through the real Store + Forwarder to a local
mosquitto, next to a naive loop (one QoS 1 publish per punch, wait for PUBACK, mark that row)
measured in the same run. Prints punches/s for both and their ratio (goal: >= 10x).

    python -m bench.drain [--punches 200000] [--devices 20] [--naive-seconds 10]

The fuller comparison against a bare sqlite3 + aiomqtt probe lives in bench/bench_drain.py.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import time
from pathlib import Path

import aiomqtt
import structlog

from punchgate.gateway.settings import Settings
from punchgate.sync.forwarder import Forwarder
from punchgate.sync.store import Store
from tests.broker import Broker
from tests.sync.punches import make_punch

GATEWAY_ID = "bench-drain"


def _settings(workdir: Path, port: int, name: str) -> Settings:
    return Settings.model_validate(
        {
            "gateway_id": GATEWAY_ID,
            "mqtt": {"host": "127.0.0.1", "port": port, "batch_size": 500},
            "buffer": {"path": str(workdir / f"{name}.db"), "min_free_disk_mb": 0},
        }
    )


def _fill(settings: Settings, punches: int, devices: int) -> Store:
    store = Store.open(settings.buffer)
    names = [f"term-{i:03d}" for i in range(devices)]
    per_device = punches // devices
    for device in names:  # one terminal's full read per commit, as the workers store them
        store.add_punches([make_punch(device, n) for n in range(per_device)])
    return store


async def _forwarder_drain(settings: Settings, store: Store) -> float:
    forwarder = Forwarder(settings, store, version="bench")
    started = time.perf_counter()
    task = asyncio.create_task(forwarder.run())
    try:
        while store.pending_count() > 0:
            await asyncio.sleep(0.005)
        return time.perf_counter() - started
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _naive_drain(store: Store, port: int, seconds: float) -> tuple[int, float]:
    """One message per punch, each awaited and marked on its own: what batching replaces."""
    sent = 0
    started = time.perf_counter()
    async with aiomqtt.Client("127.0.0.1", port) as client:
        while time.perf_counter() - started < seconds:
            rows = await asyncio.to_thread(store.pending_batch, 100)
            if not rows:
                break
            for row in rows:
                await client.publish(
                    f"punchgate/{GATEWAY_ID}/devices/{row.device}/punches", row.payload, qos=1
                )
                await asyncio.to_thread(store.mark_delivered, [row.pk])
                sent += 1
    return sent, time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.drain", description=__doc__)
    parser.add_argument("--punches", type=int, default=200_000)
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--naive-seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with tempfile.TemporaryDirectory(prefix="punchgate-drain-") as tmp:
        workdir = Path(tmp)
        with Broker(workdir / "broker") as broker:
            settings = _settings(workdir, broker.port, "gateway")
            store = _fill(settings, args.punches, args.devices)
            total = store.pending_count()
            elapsed = asyncio.run(_forwarder_drain(settings, store))
            store.close()
            naive_store = _fill(_settings(workdir, broker.port, "naive"), 20_000, args.devices)
            sent, naive_elapsed = asyncio.run(_naive_drain(naive_store, broker.port, args.naive_seconds))
            naive_store.close()
    rate = total / elapsed
    naive_rate = sent / naive_elapsed
    print(f"forwarder: drained {total:,} punches in {elapsed:.2f} s = {rate:,.0f} punches/s")
    print(
        f"naive per-punch QoS 1 loop: {sent:,} punches in {naive_elapsed:.2f} s = {naive_rate:,.0f} punches/s"
    )
    verdict = "met" if rate >= 10 * naive_rate else "MISSED"
    print(f"ratio: {rate / naive_rate:.1f}x (goal >= 10x: {verdict})")


if __name__ == "__main__":
    main()
