"""Helpers for the sync tests: settings pointing at a test broker, a forwarder task, the buffer."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from punchgate.gateway.settings import Settings
from punchgate.sync.forwarder import Forwarder
from punchgate.sync.store import Store

GATEWAY_ID = "gw-test"


def make_settings(
    tmp_path: Path, port: int, *, buffer: dict[str, Any] | None = None, **mqtt: Any
) -> Settings:
    mqtt_config: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "reconnect_min": 0.2,
        "reconnect_max": 1.0,
        "publish_timeout": 5.0,
        "keepalive": 10,
    }
    mqtt_config.update(mqtt)
    buffer_config: dict[str, Any] = {"path": str(tmp_path / "buffer.db"), "min_free_disk_mb": 0}
    buffer_config.update(buffer or {})
    return Settings.model_validate({"gateway_id": GATEWAY_ID, "mqtt": mqtt_config, "buffer": buffer_config})


@contextlib.asynccontextmanager
async def running(forwarder: Forwarder) -> AsyncIterator[asyncio.Task[None]]:
    """Run the forwarder in a task for the duration of the block; cancel and await it after."""
    task = asyncio.create_task(forwarder.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def open_store(settings: Settings) -> Store:
    return Store.open(settings.buffer)
