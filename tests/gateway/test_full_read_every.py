"""A terminal's `full_read_every` bounds how far apart its whole reads may be, in polls: the worker
the gateway builds for it reads in full at least that often (the mechanism itself, a log
cleared and refilled to the same count read within the bound, is tests/gateway/test_poll_cost.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from punchgate.gateway.app import Application
from punchgate.gateway.app_terminals import build_worker
from punchgate.gateway.settings import Settings
from punchgate.gateway.worker_known_log import reconcile_polls_for
from punchgate.sync.forwarder import Forwarder
from punchgate.sync.store import Store


@pytest.mark.parametrize(
    ("every", "interval", "polls"),
    [(3600, 30, 120), (3600, 60, 60), (300, 30, 10), (90, 30, 3), (45, 30, 2), (31, 30, 2), (10, 60, 1)],
)
def test_the_bound_in_polls_is_rounded_up_and_at_least_one(every: float, interval: float, polls: int) -> None:
    assert reconcile_polls_for(every, interval) == polls


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Application]:
    terminals = [
        {"type": "zk", "name": "door-1", "host": "127.0.0.1", "port": 4370, "poll_interval": 30},
        {
            "type": "zk",
            "name": "door-2",
            "host": "127.0.0.1",
            "port": 4371,
            "poll_interval": 30,
            "full_read_every": 300,
        },
    ]
    settings = Settings.model_validate(
        {
            "gateway_id": "gw-unit",
            "buffer": {"path": str(tmp_path / "buffer.db"), "min_free_disk_mb": 0},
            "terminals": terminals,
        }
    )
    built = Application(settings)
    built.store = Store.open(settings.buffer, gateway_id=settings.gateway_id)
    built.forwarder = Forwarder(settings, built.store, version="test")  # built, never started
    yield built
    built.store.close()


def test_the_gateway_builds_each_worker_with_its_terminals_bound(app: Application) -> None:
    first, second = (build_worker(app, terminal) for terminal in app.settings.terminals)
    assert first.reconcile_polls == 120  # the default: an hour of 30 s polls
    assert second.reconcile_polls == 10  # five minutes


def test_the_setting_is_checked_like_every_other() -> None:
    terminal = {"type": "zk", "name": "door-1", "host": "127.0.0.1", "full_read_every": 0}
    with pytest.raises(ValueError, match="full_read_every"):
        Settings.model_validate({"gateway_id": "gw-unit", "terminals": [terminal]})
