"""Normalisation: stable ids, terminal-local time to UTC, DST flags, impossible times."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from punchgate.drivers.base import RawPunch
from punchgate.gateway.normalize import normalize_punch, record_id, to_utc

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
BERLIN = ZoneInfo("Europe/Berlin")
SHANGHAI = ZoneInfo("Asia/Shanghai")


def raw(when: dt.datetime, user: str = "42", state: int = 0, verify: int = 1) -> RawPunch:
    return RawPunch(user_id=user, timestamp=when, state=state, verify=verify, raw=b"\x01")


def punch(when: dt.datetime, zone: ZoneInfo = BERLIN, **kw: object):  # type: ignore[no-untyped-def]
    return normalize_punch(
        raw(when, **kw),  # type: ignore[arg-type]
        device="gate",
        serial_number="SN1",
        zone=zone,
        source="poll",
        historical=True,
        now=NOW,
    )


def test_id_is_stable_and_depends_only_on_identifying_fields() -> None:
    when = dt.datetime(2026, 5, 4, 8, 0, 1)
    a = record_id("SN1", raw(when))
    assert a == record_id("SN1", RawPunch(user_id="42", timestamp=when, state=0, verify=1, work_code=9))
    assert len(a) == 32 and int(a, 16) >= 0
    assert a != record_id("SN2", raw(when))
    assert a != record_id("SN1", raw(when, user="43"))
    assert a != record_id("SN1", raw(when, state=1))
    assert a != record_id("SN1", raw(when, verify=15))
    assert a != record_id("SN1", raw(when + dt.timedelta(seconds=1)))


def test_shanghai_has_a_fixed_offset() -> None:
    p = punch(dt.datetime(2026, 7, 1, 8, 30), SHANGHAI)
    assert p.utc_time == dt.datetime(2026, 7, 1, 0, 30, tzinfo=dt.UTC)
    assert p.utc_offset == "+08:00" and p.flags == ()


def test_berlin_summer_and_winter() -> None:
    assert punch(dt.datetime(2026, 7, 1, 8, 0)).utc_time.hour == 6
    assert punch(dt.datetime(2026, 12, 1, 8, 0)).utc_time.hour == 7


def test_berlin_spring_gap_is_flagged_and_moved_forward() -> None:
    p = punch(dt.datetime(2026, 3, 29, 2, 30))  # 02:00-03:00 does not exist that night
    assert p.flags == ("dst_gap",)
    assert p.utc_time == dt.datetime(2026, 3, 29, 1, 30, tzinfo=dt.UTC)  # = 03:30 CEST
    assert p.utc_offset == "+02:00"


def test_berlin_autumn_fold_is_flagged_and_takes_the_first_instant() -> None:
    p = punch(dt.datetime(2026, 10, 25, 2, 30))  # happens twice
    assert p.flags == ("dst_fold",)
    assert p.utc_time == dt.datetime(2026, 10, 25, 0, 30, tzinfo=dt.UTC)
    assert p.utc_offset == "+02:00"
    after = punch(dt.datetime(2026, 10, 25, 3, 30))
    assert after.flags == () and after.utc_time == dt.datetime(2026, 10, 25, 2, 30, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("when", "flag"),
    [
        (dt.datetime(2000, 1, 1, 0, 0, 0), "before_2000"),  # dead clock battery
        (dt.datetime(1999, 12, 31, 23, 0, 0), "before_2000"),
        (dt.datetime(2110, 3, 1, 8, 0, 0), "in_future"),  # runaway clock
        (dt.datetime(2026, 11, 24, 8, 0, 0), "in_future"),
    ],
)
def test_impossible_times_are_quarantined_not_dropped(when: dt.datetime, flag: str) -> None:
    p = punch(when)
    assert flag in p.flags and p.quarantined
    assert p.local_time == when


def test_names_with_raw_codes_kept() -> None:
    p = punch(dt.datetime(2026, 5, 4, 8, 0), state=1, verify=15)
    assert (p.state, p.state_name, p.verify, p.verify_name) == (1, "check_out", 15, "face")
    unknown = punch(dt.datetime(2026, 5, 4, 8, 0), state=99, verify=77)
    assert (unknown.state, unknown.state_name, unknown.verify_name) == (99, None, None)


def test_to_utc_gap_and_fold_round_trip() -> None:
    utc, offset, flags = to_utc(dt.datetime(2026, 1, 15, 9, 0), BERLIN)
    assert (utc.hour, offset, flags) == (8, 3600, ())


def test_id_follows_the_recipe_published_for_integrators() -> None:
    # docs/mqtt-contract.md: sha256("1␟serial␟user␟local_time␟state␟verify")[:32]
    import hashlib

    when = dt.datetime(2026, 3, 29, 8, 0, 5)
    text = "\x1f".join(["1", "SN1", "42", "2026-03-29T08:00:05", "1", "15"])
    assert record_id("SN1", raw(when, state=1, verify=15)) == hashlib.sha256(text.encode()).hexdigest()[:32]
