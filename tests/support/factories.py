"""Shared factories: realistic normalised punches, as the gateway stores and forwards them.

make_punch("door-1", 7)                 # the 7th punch of terminal door-1
make_punches("door-1", 300, start=1000) # 300 consecutive ones
interleaved(["a", "b"], 100)            # several terminals, interleaved as a site produces them
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterator

from punchgate.sync.records import ManualInfo, Punch, Source

_STATES = {0: "check_in", 1: "check_out", 2: "break_out", 3: "break_in", 4: "overtime_in", 5: "overtime_out"}
_VERIFY = {0: "password", 1: "fingerprint", 2: "card", 15: "face"}
_START = dt.datetime(2024, 3, 4, 7, 0, 0)


def make_punch(
    device: str,
    n: int,
    *,
    serial: str | None = None,
    source: Source = "poll",
    flags: tuple[str, ...] = (),
) -> Punch:
    """The n-th punch of a terminal: distinct ids, plausible fields, local time 1 s apart."""
    serial = serial or f"SN-{device}"
    local = _START + dt.timedelta(seconds=n)
    user = str(1000 + n % 250)
    state = n % 6
    verify = (0, 1, 2, 15)[n % 4]
    key = f"{serial}|{user}|{local.isoformat()}|{state}|{verify}"
    manual = None
    if source == "manual":  # a make-up punch always carries who entered and approved it
        entered = (local - dt.timedelta(hours=1)).replace(tzinfo=dt.UTC) + dt.timedelta(days=1)
        manual = ManualInfo(
            entry_id=f"00000000-0000-4000-8000-{n:012d}",
            reason_code="forgot_to_punch",
            reason="forgot the badge",
            entered_by="Alice",
            entered_at=entered,
            approved_by="Bob",
            approved_at=entered + dt.timedelta(hours=2),
        )
    return Punch(
        id=hashlib.sha256(key.encode()).hexdigest()[:32],
        device=device,
        device_serial=serial,
        user_id=user,
        local_time=local,
        utc_time=(local - dt.timedelta(hours=1)).replace(tzinfo=dt.UTC),
        utc_offset_seconds=3600,
        state=state,
        state_name=_STATES.get(state),
        verify=verify,
        verify_name=_VERIFY.get(verify),
        work_code=0,
        source=source,
        historical=source != "live",
        flags=flags,
        raw=n.to_bytes(4, "little"),
        manual=manual,
    )


def make_punches(device: str, count: int, *, start: int = 0, source: Source = "poll") -> list[Punch]:
    return [make_punch(device, n, source=source) for n in range(start, start + count)]


def interleaved(devices: list[str], per_device: int) -> Iterator[Punch]:
    """Punches of several terminals, interleaved as a real site produces them."""
    for n in range(per_device):
        for device in devices:
            yield make_punch(device, n)
