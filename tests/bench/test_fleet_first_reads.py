"""The fleet benchmark's first-start figures, from a daemon's log events (pure logic, no daemon):
each terminal's first whole read is told apart from every later poll, the import ends with the
last of them, and the CPU share up to that moment comes from the samples taken meanwhile."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from bench.bench_fleet import CpuClock, first_reads

LAUNCH = dt.datetime(2026, 12, 2, 8, 0, tzinfo=dt.UTC)


def event(name: str, device: str, at: float, lag: float, records: int = 0) -> dict[str, Any]:
    stamp = (LAUNCH + dt.timedelta(seconds=at)).isoformat().replace("+00:00", "Z")
    return {"event": name, "device": device, "timestamp": stamp, "poll_lag": lag, "records": records}


def clock(samples: list[tuple[float, float]]) -> CpuClock:
    cpu = CpuClock(pid=0, launched=LAUNCH.timestamp())
    cpu.samples += [(LAUNCH.timestamp() + at, used) for at, used in samples]
    return cpu


def test_each_terminals_first_whole_read_is_its_import_and_the_rest_are_later_polls() -> None:
    reads = [
        event("full_read", "a", 10.0, 0.5, records=2000),
        event("full_read", "b", 40.0, 30.0, records=1990),
        event("full_read", "a", 95.0, 0.1, records=2003),  # a's periodic read: a later poll
    ]
    counted = [event("poll_counted", "a", 31.0, 0.02)]
    timed = reads + counted
    cpu = clock([(20.0, 18.0), (41.0, 36.9), (60.0, 40.0)])

    found = first_reads(reads, timed, terminals=2, launched=LAUNCH.timestamp(), cpu_at=cpu)

    assert sorted(found.lags) == [0.5, 30.0]
    assert sorted(found.later_lags) == [0.02, 0.1]
    assert found.records == 3990
    assert found.seconds == 40.0
    assert math.isclose(found.cpu, 36.9 / 41.0 * 100)  # the first sample at or after the end


def test_an_import_a_terminal_never_finished_has_no_end() -> None:
    reads = [event("full_read", "a", 10.0, 0.5, records=2000)]
    found = first_reads(reads, reads, terminals=2, launched=LAUNCH.timestamp(), cpu_at=clock([(30.0, 9.0)]))
    assert found.seconds == math.inf and math.isnan(found.cpu)
    assert found.later_lags == []
