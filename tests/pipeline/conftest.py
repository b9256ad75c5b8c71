"""Fixtures for end-to-end tests: emulated ZK terminals, the daemon as a process, a real broker."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from punchgate.drivers.zk.emulator import ZkEmulator
from tests.broker import Broker
from tests.gateway_process import GatewayProcess, render_config

GATEWAY_ID = "gw-test"


@pytest.fixture
async def emulators() -> AsyncIterator[Callable[..., Any]]:
    """`await emulators(count, profile=..., records=..., ...)` starts terminals; all stop at teardown."""
    started: list[ZkEmulator] = []

    async def make(
        count: int = 1, *, records: int = 0, users: int = 20, seed: int = 0, **options: Any
    ) -> list[ZkEmulator]:
        batch = []
        for _ in range(count):
            emulator = ZkEmulator(
                serial_number=options.pop("serial_number", None) or f"SN{len(started):05d}", **options
            )
            if records:
                emulator.generate_log(records=records, days=30, users=users, seed=seed + len(started))
            await emulator.start()
            started.append(emulator)
            batch.append(emulator)
        return batch

    yield make
    for emulator in started:
        await emulator.stop()


@pytest.fixture
async def gateway_factory(tmp_path: Path, broker: Broker) -> AsyncIterator[Callable[..., GatewayProcess]]:
    """Write a config for these terminals and return a (not started) daemon process."""
    processes: list[GatewayProcess] = []

    def make(
        terminals: list[Mapping[str, Any]],
        *,
        env: Mapping[str, str] | None = None,
        http_port: int | None = None,
        **sections: Any,
    ) -> GatewayProcess:
        path = tmp_path / f"gateway{len(processes)}.toml"
        path.write_text(
            render_config(
                gateway_id=GATEWAY_ID,
                broker_port=broker.port,
                buffer_path=tmp_path / "buffer.db",
                terminals=terminals,
                http_port=http_port,
                **sections,
            )
        )
        process = GatewayProcess(path, env=env)
        processes.append(process)
        return process

    yield make
    for process in processes:
        # In a thread: the emulators live on this event loop and must answer the gateway's
        # goodbye (re-enable, disconnect) while it shuts down.
        await asyncio.to_thread(process.stop, timeout=20)


def zk_terminal(name: str, emulator: ZkEmulator, **options: Any) -> dict[str, Any]:
    udp = options.get("transport") == "udp"
    port = emulator.udp_port if udp else emulator.tcp_port
    return {"type": "zk", "name": name, "host": "127.0.0.1", "port": port, "poll_interval": 30, **options}


def buffer_rows(path: Path) -> tuple[int, int]:
    """(rows, distinct ids) in the gateway's SQLite buffer."""
    with sqlite3.connect(path) as db:
        rows, distinct = db.execute("SELECT count(*), count(DISTINCT id) FROM punches").fetchone()
    return int(rows), int(distinct)
