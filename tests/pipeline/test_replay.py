"""`punchgate replay`: delivered punches go out again through the running daemon, which asks
for its API token (read from the token file the daemon created beside the buffer)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import stat
import subprocess
import sys
import urllib.error
import urllib.request
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

    # Without the token (what a web page could send): refused, nothing replayed.
    url = f"http://127.0.0.1:{port}"
    status, answer = await asyncio.to_thread(
        post_json, f"{url}/api/replay", {"since": started.isoformat()}, token=None
    )
    assert status == 401 and "no API token sent" in answer
    token_file = tmp_path / "api" / "token"  # beside the buffer, created at the daemon's start
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(token_file.parent.stat().st_mode) == 0o700

    # --config: the address and the token file come from the daemon's own config.
    result = await asyncio.to_thread(
        replay, "--config", str(gateway.config_path), "--since", started.isoformat(), "--device", "first"
    )
    assert result.returncode == 0, result.stderr
    assert "50 punches queued" in result.stdout
    await wait_until_async(
        lambda: subscriber.reconciler.duplicates >= 50, timeout=30, message="replayed punches"
    )
    assert subscriber.reconciler.duplicates == 50  # exactly first's punches, once more
    assert gateway.events("replay_requested")[0]["requeued"] == 50
    assert token_file.read_text().strip() not in gateway.log_text()  # never logged

    bad = await asyncio.to_thread(replay, "--url", url, "--since", "yesterday")
    assert bad.returncode == 2 and "not an ISO 8601 time" in bad.stderr
    unknown = await asyncio.to_thread(
        replay,
        "--url",
        url,
        "--token-file",
        str(token_file),
        "--since",
        started.isoformat(),
        "--device",
        "nope",
    )
    assert unknown.returncode == 1 and "no terminal named 'nope'" in unknown.stderr
    ancient = await asyncio.to_thread(
        replay, "--url", url, "--token-file", str(token_file), "--since", "1990-01-01T00:00:00Z"
    )
    assert ancient.returncode == 1 and "is before 2000" in ancient.stderr
    no_token = await asyncio.to_thread(
        replay, "--url", url, "--token-file", str(tmp_path / "nope"), "--since", started.isoformat()
    )
    assert no_token.returncode == 2 and "no API token at" in no_token.stderr
    assert subscriber.reconciler.duplicates == 50


def post_json(url: str, payload: dict[str, Any], *, token: str | None) -> tuple[int, str]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
