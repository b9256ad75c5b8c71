"""The uid -> user id map a live stream needs is kept only by a terminal that streams: a polled
terminal's roster read would otherwise hold every enrolled user's id for good (a fleet of
thousands of terminals pays it thousands of times)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.zk_driver.conftest import EmulatorFactory, terminal_config


@pytest.mark.parametrize("live", [False, True])
async def test_the_user_map_is_kept_only_for_a_live_stream(
    start_emulator: EmulatorFactory, open_driver: Any, live: bool
) -> None:
    emulator = await start_emulator(serial_number="MAP0000001")
    emulator.generate_log(20, days=2, users=12, seed=3)
    driver = await open_driver(terminal_config(emulator, live=live))
    users = await driver.list_users()
    assert len(users) == 12
    kept = driver._live.user_ids
    assert kept == ({u.uid: u.user_id for u in emulator.users} if live else {})
