"""`punchgate replay` and `punchgate status` as clients of the guarded API (in-process server).

The end-to-end run against a real daemon is tests/pipeline/test_replay.py.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from punchgate.gateway.cli import _api_url, main
from punchgate.gateway.http import HttpServer
from punchgate.gateway.settings import Settings
from punchgate.gateway.status_cli import show_status
from tests.gateway.test_http import TOKEN, ReplayForwarder, ReplayStore
from tests.health.test_http_and_cli import FakeApp


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Any, HttpServer, Path]]:
    app = FakeApp()
    app.store, app.forwarder = ReplayStore(), ReplayForwarder()
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    http = HttpServer(app, token=TOKEN)  # type: ignore[arg-type]
    await http.start("127.0.0.1", 0)
    try:
        yield app, http, token_file
    finally:
        await http.close()


async def _replay(*args: str) -> Result:
    return await asyncio.to_thread(CliRunner().invoke, main, ["replay", *args])


async def test_replay_sends_the_token_and_a_json_body(served: tuple[Any, HttpServer, Path]) -> None:
    app, http, token_file = served
    since = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=2)
    result = await _replay(
        "--url", f"http://127.0.0.1:{http.port}", "--token-file", str(token_file),
        "--since", since.isoformat(), "--device", "gate-1",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "7 punches queued" in result.output
    assert app.store.calls == [(since.timestamp(), "gate-1")]


async def test_replay_with_a_wrong_token_is_refused(
    served: tuple[Any, HttpServer, Path], tmp_path: Path
) -> None:
    app, http, _token_file = served
    other = tmp_path / "other-token"
    other.write_text("x" * 43)
    result = await _replay(
        "--url", f"http://127.0.0.1:{http.port}", "--token-file", str(other), "--since", "2026-11-20T06:00:00Z"
    )  # fmt: skip
    assert result.exit_code == 1 and "replay refused: wrong API token" in result.output
    assert app.store.calls == []


async def test_replay_says_what_to_do_without_a_readable_token(
    served: tuple[Any, HttpServer, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _app, http, token_file = served
    url = f"http://127.0.0.1:{http.port}"
    missing = await _replay("--url", url, "--token-file", str(tmp_path / "nope"), "--since", "2026-11-20")
    assert missing.exit_code == 2 and "the daemon creates it when it first starts" in missing.output

    def denied(self: Path, *args: Any, **kwargs: Any) -> str:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_text", denied)  # as any user but the service user and root
    result = await _replay("--url", url, "--token-file", str(token_file), "--since", "2026-11-20")
    assert result.exit_code == 2
    assert f"cannot read the API token {token_file}: permission denied" in result.output
    assert "run as the punchgate user or root" in result.output


async def test_replay_finds_the_token_through_the_config(tmp_path: Path) -> None:
    """--config: the token file the daemon uses (here [http] token_file) and its address."""
    config = tmp_path / "gateway.toml"
    token_file = tmp_path / "tok"
    token_file.write_text(TOKEN)
    config.write_text(
        f'gateway_id = "gw"\n[buffer]\npath = "{tmp_path / "b.db"}"\n'
        f'[http]\nbind = "0.0.0.0"\nallow_plain_http = true\nport = 9\ntoken_file = "{token_file}"\n'
    )
    result = await _replay("--config", str(config), "--since", "2026-11-20T06:00:00Z")
    # Nothing listens on port 9: the token was read and the wildcard bind became loopback.
    assert (
        result.exit_code == 2 and "cannot reach the punchgate daemon at http://127.0.0.1:9" in result.output
    )


def test_api_url_reaches_a_wildcard_bind_over_loopback() -> None:
    def url(bind: str) -> str:
        http = {"bind": bind, "port": 9108, "allow_plain_http": True}  # beyond loopback: no TLS here
        return _api_url(Settings.model_validate({"gateway_id": "gw", "http": http}))

    assert url("0.0.0.0") == "http://127.0.0.1:9108"
    assert url("::") == "http://[::1]:9108"
    assert url("192.0.2.10") == "http://192.0.2.10:9108"
    assert url("::1") == "http://[::1]:9108"
    assert _api_url(None) == "http://127.0.0.1:9108"


async def test_status_explains_a_refused_host(
    served: tuple[Any, HttpServer, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """http://0.0.0.0:PORT reaches loopback on Linux, but 0.0.0.0 is no name of the daemon's."""
    _app, http, _token_file = served
    assert await asyncio.to_thread(show_status, f"http://0.0.0.0:{http.port}") == 2
    out = capsys.readouterr().out
    assert "refused: 403" in out and "is not this gateway" in out
    assert await asyncio.to_thread(show_status, f"http://localhost:{http.port}") == 0
