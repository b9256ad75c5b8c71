"""The sink's counters and gauges, as `/metrics` and `/healthz` read them (`http.py`).

The writer thread and paho's network thread update them; readers take them as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SinkStats:
    """Counters for /metrics (monotonic except the gauges marked so)."""

    received: int = 0
    flushes: int = 0
    punches_new: int = 0
    punches_repeated: int = 0
    dead_letters: int = 0
    ignored: int = 0  # empty payloads (a retained message being cleared)
    confirmations: int = 0  # confirmation messages published
    confirmed_ids: int = 0
    db_failures: int = 0
    connects: int = 0
    resend_requests: int = 0  # punches.resend requests published for days missing punches
    resend_requests_limited: int = 0  # gap days not asked for again yet (within resend_interval)
    connected: bool = False  # gauge
    inbox: int = 0  # gauge: received, not committed yet
    mismatching_days: int = 0  # gauge: digest days that differ for longer than the grace
    last_flush_at: float | None = None
    last_db_error: str = ""
    waiting_for_database: bool = False  # gauge: not started yet, the database is unreachable
    by_kind: dict[str, int] = field(default_factory=dict)
