"""The working calendar behind the `silent` fault: how much *working* time passed between two instants.

A terminal at a factory gate is quiet at night, at weekends and on holidays, and that is
fine; it is suspicious only when it stays quiet through working hours. So `silent` compares
the working time since the last punch (not the wall-clock time) with its threshold. Days and
hours are in the terminal's own timezone, so DST changes and sites in other zones just work.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from zoneinfo import ZoneInfo

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_MIDNIGHT = dt.time(0, 0)
MAX_SPAN = dt.timedelta(days=366)


@dataclass(frozen=True, slots=True)
class WorkingCalendar:
    """Working days (by name), daily working hours and holidays, in one timezone.

    `end` of 00:00 means the end of the day, so 00:00-00:00 is a 24-hour working day.
    A window whose end is before its start runs overnight (22:00-06:00).
    """

    zone: ZoneInfo
    days: frozenset[str] = frozenset(DAY_NAMES[:5])
    start: dt.time = dt.time(8, 0)
    end: dt.time = dt.time(18, 0)
    holidays: frozenset[dt.date] = frozenset()

    @classmethod
    def build(
        cls,
        *,
        zone: str,
        days: Iterable[str],
        start: dt.time,
        end: dt.time,
        holidays: Iterable[dt.date] = (),
    ) -> WorkingCalendar:
        unknown = set(days) - set(DAY_NAMES)
        if unknown:
            raise ValueError(f"unknown day names {sorted(unknown)}; use {', '.join(DAY_NAMES)}")
        return cls(ZoneInfo(zone), frozenset(days), start, end, frozenset(holidays))

    def is_working_day(self, day: dt.date) -> bool:
        return DAY_NAMES[day.weekday()] in self.days and day not in self.holidays

    def _windows(self, day: dt.date) -> list[tuple[dt.datetime, dt.datetime]]:
        """The day's working windows as aware datetimes (an overnight shift ends the next day)."""
        if not self.is_working_day(day):
            return []
        opens = dt.datetime.combine(day, self.start, self.zone)
        closes_on = day if self.end > self.start else day + dt.timedelta(days=1)
        if self.end == _MIDNIGHT:
            closes_on = day + dt.timedelta(days=1)
        closes = dt.datetime.combine(closes_on, self.end, self.zone)
        return [(opens, closes)]

    def working_seconds(self, since: dt.datetime, until: dt.datetime) -> float:
        """Seconds of working time in [since, until); both must be timezone-aware."""
        if until <= since:
            return 0.0
        # A last punch years ago (or a dead clock's 2000) only needs to count as "a lot".
        since = max(since, until - MAX_SPAN)
        first = since.astimezone(self.zone).date() - dt.timedelta(days=1)  # yesterday's night shift
        last = until.astimezone(self.zone).date()
        total = 0.0
        day = first
        while day <= last:
            for opens, closes in self._windows(day):
                # Compare as UTC instants: aware arithmetic in one zone ignores DST shifts.
                lo = max(opens.astimezone(dt.UTC), since.astimezone(dt.UTC))
                hi = min(closes.astimezone(dt.UTC), until.astimezone(dt.UTC))
                if hi > lo:
                    total += (hi - lo).total_seconds()
            day += dt.timedelta(days=1)
        return total
