"""A stopped gateway leaves every terminal's known log as it last read it, so its restart goes
on from there: while it runs, tail reads write it lazily (at most every META_LAZY_SECONDS), and
a restart after such a stop read up to that much of every log again (gateway/app_stop.py). It
leaves each terminal's digest days too, which the restart takes back (sync/digests.py)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from punchgate.gateway.worker_known_log import KNOWN_LOG_KEY
from tests.health.rig import PUNCHER, EmulatorFarm
from tests.support.broker import Broker
from tests.support.config import write_config, zk_terminal
from tests.support.gateway import GatewayProcess, log_events
from tests.support.waiting import wait_until

RECORDS = 40
TERMINALS = ("door-1", "door-2")


@pytest.fixture
def farm() -> Iterator[EmulatorFarm]:
    emulators = EmulatorFarm()
    try:
        for seed, name in enumerate(TERMINALS):
            emulators.add(name, records=RECORDS, seed=seed)
        yield emulators
    finally:
        emulators.close()


def _known_counts(buffer: Path) -> dict[str, int]:
    with sqlite3.connect(buffer) as db:
        rows = db.execute("SELECT device, data FROM device_meta").fetchall()
    counts: dict[str, int] = {}
    for device, text in rows:
        known: dict[str, Any] = json.loads(text).get(KNOWN_LOG_KEY) or {}
        if isinstance(known.get("count"), int):
            counts[str(device)] = known["count"]
    return counts


def _polls(log: Path) -> list[dict[str, Any]]:
    return [e for name in ("full_read", "tail_read", "poll_counted") for e in log_events(log, name)]


def test_a_restart_after_a_stop_goes_on_from_the_last_read(
    tmp_path: Path, broker: Broker, farm: EmulatorFarm
) -> None:
    buffer = tmp_path / "buffer.db"
    config = write_config(
        tmp_path / "gateway.toml",
        gateway_id="meta-gw",
        broker_port=broker.port,
        buffer_path=buffer,
        terminals=[
            zk_terminal(name, farm.terminals[name].tcp_port or 0, poll_interval=1, live=False)
            for name in TERMINALS
        ],
        timezone="UTC",
    )
    first_log = tmp_path / "first.log"
    gateway = GatewayProcess(config, log_path=first_log)
    try:
        gateway.start()
        wait_until(
            lambda: len(log_events(first_log, "full_read")) >= len(TERMINALS),
            timeout=30,
            message="first reads",
        )
        # Three punches a terminal, each read by a tail read: the lazily written meta still
        # describes the first whole read (40 records).
        for n in range(3):
            for name in TERMINALS:
                farm.do(lambda name=name: farm.terminals[name].add_punch(PUNCHER))  # type: ignore[misc]
            wait_until(
                lambda n=n: all(  # type: ignore[misc]
                    any(
                        e.get("device") == name and e.get("records") == RECORDS + n + 1
                        for e in _polls(first_log)
                    )
                    for name in TERMINALS
                ),
                timeout=30,
                message=f"punch {n + 1} read",
            )
        assert set(_known_counts(buffer).values()) == {RECORDS}, "tail reads wrote the meta at once"
    finally:
        gateway.stop(timeout=30)
    assert _known_counts(buffer) == dict.fromkeys(TERMINALS, RECORDS + 3)
    # The digests' days too: the restart takes them back rather than computing every day again.
    with sqlite3.connect(buffer) as db:
        kept = {row[0] for row in db.execute("SELECT device FROM device_meta WHERE device LIKE '%/digests'")}
    assert kept == {f"{name}/digests" for name in TERMINALS}

    second_log = tmp_path / "second.log"
    restarted = GatewayProcess(config, log_path=second_log)
    try:
        restarted.start()
        wait_until(
            lambda: {e.get("device") for e in _polls(second_log)} >= set(TERMINALS),
            timeout=30,
            message="polls",
        )
        first_polls = {
            name: next(e for e in _polls(second_log) if e.get("device") == name) for name in TERMINALS
        }
        # Nothing new since the stop: each terminal is answered by its count, nothing read again.
        assert {name: e["event"] for name, e in first_polls.items()} == dict.fromkeys(
            TERMINALS, "poll_counted"
        )
        wait_until(lambda: log_events(second_log, "digests_restored"), timeout=30, message="digests restored")
        assert log_events(second_log, "digests_restored")[0]["terminals"] == len(TERMINALS)
    finally:
        restarted.stop(timeout=30)
