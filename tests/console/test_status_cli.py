"""`punchgate status` reads like the console: root cause first with what to do, and fits 80 columns."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from punchgate.gateway.status_cli import render

STATUS: dict[str, Any] = {
    "gateway": {
        "gateway_id": "gw-plant-7",
        "broker_connected": False,
        "pending": 12,
        "oldest_pending_age_seconds": 340.0,
        "faults": [
            {
                "code": "delivery_delayed",
                "severity": "warning",
                "detail": "oldest waits 340 s",
                "since": None,
            },
            {
                "code": "broker_unreachable",
                "severity": "error",
                "detail": "connection refused",
                "since": "2026-11-30T11:00:00Z",
            },
        ],
        "clock_synchronised": True,
        "clock_sync_source": "timedatectl",
        "healthy": False,
    },
    "devices": [
        {
            "device": "canteen-entrance-north",
            "state": "online",
            "faults": [],
            "last_contact": "2026-11-30T11:35:53.253153Z",
            "last_punch_at": "2026-11-30T11:30:00Z",
            "clock_drift_seconds": -0.4,
            "record_count": 120,
            "record_capacity": 200000,
            "pending": 0,
        },
        {
            "device": "warehouse-gate-2",
            "state": "offline",
            "faults": [
                {
                    "code": "silent",
                    "severity": "info",
                    "detail": "no punches for 3 h",
                    "since": "2026-11-30T08:00:00Z",
                },
                {
                    "code": "unreachable",
                    "severity": "error",
                    "detail": "warehouse-gate-2: connect tcp://192.0.2.31:4370: No route to host",
                    "since": "2026-11-30T10:05:00Z",
                },
            ],
            "last_contact": "2026-11-30T10:04:00Z",
            "last_punch_at": None,
            "clock_drift_seconds": None,
            "record_count": None,
            "record_capacity": None,
            "pending": 3,
        },
    ],
}


def _rendered(width: int) -> str:
    out = io.StringIO()
    render(STATUS, Console(file=out, width=width, color_system=None, force_terminal=False))
    return out.getvalue()


def test_at_80_columns_nothing_is_cut_and_the_root_cause_leads() -> None:
    text = _rendered(80)
    print(text)
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "…" not in text and "canteen-entrance-north" in text and "warehouse-gate-2" in text
    assert text.index("warehouse-gate-2") < text.index("canteen-entrance-north")  # worst first
    block = text[text.index("warehouse-gate-2") : text.index("canteen-entrance-north")]
    assert block.index("unreachable") < block.index("silent")  # the root cause first
    assert "→ check power, cable" in block and "since" in block
    assert "drift +0 s" in text  # never "-0 s"
    gateway = text[text.index("gateway faults:") :]
    assert gateway.index("broker_unreachable") < gateway.index("delivery_delayed")
    assert "→ check the broker" in gateway


def test_wide_terminals_are_a_table_with_every_fault_in_the_row() -> None:
    text = _rendered(250)
    rows = [line for line in text.splitlines() if "warehouse-gate-2" in line]
    assert rows and "│" in rows[0] and "unreachable" in rows[0]
    assert "silent" in text and "→ check power" in text
