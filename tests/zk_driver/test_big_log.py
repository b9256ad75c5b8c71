"""One terminal with 100,000 records, read completely (the time is printed, not asserted)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.zk_driver.conftest import EmulatorFactory, terminal_config

RECORDS = 100_000


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["tcp", pytest.param("udp", marks=pytest.mark.long)])
async def test_hundred_thousand_records(
    start_emulator: EmulatorFactory, open_driver: Any, transport: str
) -> None:
    emulator = await start_emulator(profile="tft")
    emulator.generate_log(RECORDS, days=365, users=400, seed=7)
    driver = await open_driver(terminal_config(emulator, transport, timeout=5.0))
    progress: list[tuple[int, int]] = []

    started = time.monotonic()
    punches = await driver.read_records(progress=lambda done, total: progress.append((done, total)))
    elapsed = time.monotonic() - started

    print(
        f"\n{RECORDS:,} records over {transport.upper()} read in {elapsed:.2f} s ({RECORDS / elapsed:,.0f}/s)"
    )
    assert len(punches) == RECORDS
    expected = emulator.records
    assert [p.raw for p in punches] == [r.raw for r in expected]
    assert punches[-1].timestamp == expected[-1].timestamp
    # Progress went up to the whole data set (4-byte count + 40-byte records).
    assert progress[-1] == (4 + RECORDS * 40, 4 + RECORDS * 40)
    assert [done for done, _ in progress] == sorted(done for done, _ in progress)
