"""The export's summary sheet: per user and terminal-local day, first in, last out and counts.

Keeps one small record per user and day, whatever the number of punches.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from punchgate.sync.export_model import Row

SUMMARY_HEADER = ["user_id", "name", "date", "first_in", "last_out", "count", "manual", "flags", "devices"]


@dataclass
class _Day:
    name: str = ""
    first_in: dt.datetime | None = None
    first_any: dt.datetime | None = None
    last_out: dt.datetime | None = None
    last_any: dt.datetime | None = None
    count: int = 0
    manual: int = 0
    flags: set[str] = field(default_factory=set)
    devices: set[str] = field(default_factory=set)


class Summary:
    """Per user and local day: first check-in, last check-out, punches, make-up punches, flags.

    First in is the earliest `check_in` (the earliest punch of any state when there is none);
    last out the latest `check_out` (the latest punch, when there is none and the day has more
    than one). A day is the terminal-local calendar day."""

    def __init__(self) -> None:
        self.days: dict[tuple[str, dt.date], _Day] = {}

    def add(self, row: Row) -> None:
        v = row.values
        local: dt.datetime = v["local_time"]
        day = self.days.setdefault((v["user_id"], local.date()), _Day())
        day.name = day.name or v["name"]
        day.count += 1
        day.manual += v["source"] == "manual"
        day.devices.add(row.device)
        if v["flags"]:
            day.flags.update(v["flags"].split())
        day.first_any = local if day.first_any is None else min(day.first_any, local)
        day.last_any = local if day.last_any is None else max(day.last_any, local)
        if v["state_name"] == "check_in":
            day.first_in = local if day.first_in is None else min(day.first_in, local)
        elif v["state_name"] == "check_out":
            day.last_out = local if day.last_out is None else max(day.last_out, local)

    def rows(self) -> Iterator[list[Any]]:
        for (user, date), day in sorted(
            self.days.items(), key=lambda item: (_user_key(item[0][0]), item[0][1])
        ):
            last_out = day.last_out or (day.last_any if day.count > 1 else None)
            yield [
                user,
                day.name,
                date,
                day.first_in or day.first_any,
                last_out,
                day.count,
                day.manual,
                " ".join(sorted(day.flags)),
                " ".join(sorted(day.devices)),
            ]


def _user_key(user: str) -> tuple[int, int | str]:
    return (0, int(user)) if user.isdigit() else (1, user)
