"""Fixtures shared by the central-delivery tests of this folder: settings in `central` delivery
(re-send after 60 s, room for 1,000 punches) and a real SQLite buffer opened with them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from punchgate.gateway.settings import Settings
from punchgate.sync.store import Store

GATEWAY = "gw-test"


@pytest.fixture
def central_settings(tmp_path: Path) -> Settings:
    return Settings.model_validate(
        {
            "gateway_id": GATEWAY,
            "mqtt": {"delivery": "central", "resend_after": 60},
            "buffer": {"path": str(tmp_path / "buffer.db"), "min_free_disk_mb": 0, "max_pending": 1000},
        }
    )


@pytest.fixture
def central_store(central_settings: Settings) -> Iterator[Store]:
    opened = Store.open(central_settings.buffer, gateway_id=GATEWAY)
    yield opened
    opened.close()
