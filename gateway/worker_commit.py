"""Turning a terminal's records into stored punches: normalise, commit durably, report.

The one path every punch a worker reads takes into the buffer (`normalise`, then
`commit_punches`): the commit goes through a writer (`commit_group`: shielded, so a shutdown
cannot cut it short; grouped with other workers' or not), which tells the forwarder, and the
health model hears when the terminal was last used and about punches whose times cannot be
right. Kept apart from the session loop that calls it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from zoneinfo import ZoneInfo

from punchgate.drivers.base import RawPunch
from punchgate.drivers.faults import DeviceFault
from punchgate.gateway.commit_group import PunchWriter
from punchgate.gateway.health import DeviceHealth
from punchgate.gateway.normalize import normalize_punch
from punchgate.sync.records import FLAG_BEFORE_2000, FLAG_IN_FUTURE, Punch, Source


class HeldNotice:
    """Stands in for the forwarder while a full read commits its parts: the forwarder hears of
    them once, when the read ends (or is cut short), as it did when a read was one commit. Told
    at every part, it would publish and mark deliveries (fsynced writes to the same buffer)
    while the read still runs, and the read would wait for them."""

    def __init__(self) -> None:
        self.due = False

    def notify_new_punches(self) -> None:
        self.due = True


def normalise(
    raws: Sequence[RawPunch],
    *,
    device: str,
    serial_number: str,
    zone: ZoneInfo,
    source: Source,
    historical: bool,
    driver_type: str,
    now: dt.datetime,
) -> list[Punch]:
    """Each record as a `Punch` (gateway/normalize.py), all with the same `now`."""
    return [
        normalize_punch(
            raw,
            device=device,
            serial_number=serial_number,
            zone=zone,
            source=source,
            historical=historical,
            driver_type=driver_type,
            now=now,
        )
        for raw in raws
    ]


async def commit_punches(
    punches: list[Punch], *, writer: PunchWriter, health: DeviceHealth, urgent: bool = True
) -> int:
    """Store `punches` durably through `writer` (which tells the forwarder); tell the health
    model. Returns how many were new. `urgent`: a live punch, not to wait for a group commit."""
    inserted = await writer.add(punches, urgent=urgent)
    # Every punch the terminal holds happened, new to us or not (after a restart none is):
    # the newest one tells the health model when the terminal was last used.
    health.punches_stored(max(p.utc_time for p in punches))
    if inserted:
        new_ids = set(inserted)
        bad = [p for p in punches if p.id in new_ids and {FLAG_BEFORE_2000, FLAG_IN_FUTURE} & set(p.flags)]
        if bad:
            health.set_fault(
                DeviceFault.CLOCK_INVALID,
                True,
                f"{len(bad)} punches with impossible times (e.g. {bad[0].local_time})",
            )
    return len(inserted)
