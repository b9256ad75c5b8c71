"""`punchgate replay`: delivered punches go out again through the running daemon."""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.broker import free_port
from tests.support.config import zk_terminal
from tests.support.gateway import REPO, GatewayProcess
from tests.support.reconcile import pending_count
from tests.support.subscriber import Subscriber
from tests.support.waiting import wait_until_async
from tests.support.zk import expected_ids


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
    tmp_path: Path,
) -> None:
    first, second = await emulators(2, records=50)
    port = free_port()
    gateway = gateway_factory(
        [
            zk_terminal("first", first, live=False, poll_interval=30),
            zk_terminal("second", second, live=False, poll_interval=30),
        ],
        http_port=port,
    )
    started = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    gateway.start()
    ids = set(expected_ids(first)) | set(expected_ids(second))
    assert not await subscriber.missing_after(ids, timeout=30)
    buffer = tmp_path / "buffer.db"  # where gateway_factory puts it
    await gateway.wait_until_async(lambda: pending_count(buffer) == 0, timeout=10, message="delivery marks")
    assert subscriber.reconciler.duplicates == 0

    url = f"http://127.0.0.1:{port}"
    result = await asyncio.to_thread(
        replay, "--url", url, "--since", started.isoformat(), "--device", "first"
    )
    assert result.returncode == 0, result.stderr
    assert "50 punches queued" in result.stdout
    await wait_until_async(
        lambda: subscriber.reconciler.duplicates >= 50, timeout=30, message="replayed punches"
    )
    assert subscriber.reconciler.duplicates == 50  # exactly first's punches, once more

    bad = await asyncio.to_thread(replay, "--url", url, "--since", "yesterday")
    assert bad.returncode == 2 and "not an ISO 8601 time" in bad.stderr
    unknown = await asyncio.to_thread(
        replay, "--url", url, "--since", started.isoformat(), "--device", "nope"
    )
    assert unknown.returncode == 1 and "no terminal named 'nope'" in unknown.stderr
