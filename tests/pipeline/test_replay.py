"""`punchgate replay`: delivered punches go out again through the running daemon."""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from punchgate.gateway.mosquitto import free_port
from tests.gateway_process import REPO, GatewayProcess
from tests.pipeline.conftest import zk_terminal
from tests.pipeline.expected import expected_ids
from tests.pipeline.test_zk_pipeline import arrived
from tests.subscriber import Subscriber


def replay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "punchgate.gateway", "replay", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )


async def test_replay_sends_delivered_punches_again(
    emulators: Callable[..., Any],
    gateway_factory: Callable[..., GatewayProcess],
    subscriber: Subscriber,
) -> None:
    first, second = await emulators(2, records=50)
    port = free_port()
    gateway = gateway_factory(
        [zk_terminal("first", first, live=False), zk_terminal("second", second, live=False)], http_port=port
    )
    started = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    gateway.start()
    ids = set(expected_ids(first)) | set(expected_ids(second))
    assert not await arrived(subscriber, ids, timeout=30)
    await asyncio.sleep(1)  # let the delivery marks land
    assert subscriber.reconciler.duplicates == 0

    url = f"http://127.0.0.1:{port}"
    result = await asyncio.to_thread(
        replay, "--url", url, "--since", started.isoformat(), "--device", "first"
    )
    assert result.returncode == 0, result.stderr
    assert "50 punches queued" in result.stdout
    deadline = asyncio.get_running_loop().time() + 30
    while subscriber.reconciler.duplicates < 50 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.1)
    assert subscriber.reconciler.duplicates == 50  # exactly first's punches, once more

    bad = await asyncio.to_thread(replay, "--url", url, "--since", "yesterday")
    assert bad.returncode == 2 and "not an ISO 8601 time" in bad.stderr
    unknown = await asyncio.to_thread(
        replay, "--url", url, "--since", started.isoformat(), "--device", "nope"
    )
    assert unknown.returncode == 1 and "no terminal named 'nope'" in unknown.stderr
