"""`record_json` (the template the buffer renders every stored record with) writes exactly the
bytes `json.dumps` of the record dict writes (`record_json_dumps`, the renderer before it): the
payload is the MQTT contract, and chains already written digest it."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import random
from zoneinfo import ZoneInfo

from punchgate.sync import buffer_outbox, contract_punches
from punchgate.sync.records import FLAG_BEFORE_2000, FLAG_DST_FOLD, FLAG_DST_GAP, FLAG_IN_FUTURE, Punch
from tests.support.factories import make_punch

_FLAGS = (FLAG_DST_FOLD, FLAG_DST_GAP, FLAG_BEFORE_2000, FLAG_IN_FUTURE)
# Every flag set a record can carry (one DST flag at most, one clock flag at most), plus odd ones.
_FLAG_SETS = [
    tuple(combo) for size in range(len(_FLAGS) + 1) for combo in itertools.combinations(_FLAGS, size)
] + [('x"y',), ("ü", "\\"), ("",)]
_NASTY = [
    "",
    "0",
    "1234567890",
    "Zoë Ångström",
    "王小明",
    "محمد",
    "😀👍🏽",
    "e\u0301",  # combining accent
    'quote"inside',
    "back\\slash",
    "tab\tnew\nline\rcr",
    "\x00\x01\x1f\x7f",
    "\u2028\u2029",
    "\ufeffbom",
    "/slash</script>",
    "very long " * 40,
]
_ZONES = [dt.UTC, ZoneInfo("UTC"), ZoneInfo("Europe/Berlin"), ZoneInfo("America/St_Johns"), None]


def _text(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return rng.choice(_NASTY)
    return "".join(
        chr(rng.choice((rng.randrange(0x20, 0x7F), rng.randrange(0, 0x20), rng.randrange(0xA0, 0x3000))))
        for _ in range(rng.randrange(0, 12))
    )


def _punch(rng: random.Random, n: int) -> Punch:
    base = make_punch(f"door-{n % 7}", n, source=rng.choice(("poll", "live", "push", "manual")))
    local = dt.datetime(
        rng.randrange(1970, 2100),
        rng.randrange(1, 13),
        rng.randrange(1, 29),
        rng.randrange(24),
        rng.randrange(60),
        rng.randrange(60),
    )
    if rng.random() < 0.2:
        local = local.replace(microsecond=rng.randrange(1, 1_000_000))
    if rng.random() < 0.05:
        local = local.replace(tzinfo=dt.UTC)  # the renderer drops a zone on local time
    zone = rng.choice(_ZONES)
    utc = local.replace(tzinfo=None) + dt.timedelta(seconds=rng.randrange(-50_000, 50_000))
    utc_time = utc if zone is None else utc.replace(tzinfo=dt.UTC).astimezone(zone)
    return dataclasses.replace(
        base,
        id=rng.choice((base.id, _text(rng))),
        device_serial=_text(rng),
        user_id=_text(rng),
        local_time=local,
        utc_time=utc_time,
        utc_offset_seconds=rng.choice((0, 3600, 7200, -12600, -9000, 19800, 20700, -43200, 50400, 1, -59)),
        state=rng.choice((0, 1, 5, 255, -1, 2**40)),
        state_name=rng.choice((None, "check_in", _text(rng))),
        verify=rng.choice((0, 1, 15, 200, -3)),
        verify_name=rng.choice((None, "face", _text(rng))),
        work_code=rng.choice((0, 7, 999_999, -1)),
        historical=rng.random() < 0.5,
        flags=rng.choice(_FLAG_SETS),
    )


def test_record_json_writes_the_bytes_json_dumps_writes() -> None:
    rng = random.Random(20261130)
    punches = [_punch(rng, n) for n in range(20_000)]
    # The generator does reach every case the template treats on its own.
    assert {p.manual is None for p in punches} == {True, False}
    assert {p.state_name is None for p in punches} == {True, False}
    assert {len(p.flags) for p in punches} >= {0, 1, 2, 3, 4}
    assert any(p.utc_time.tzinfo is dt.UTC for p in punches)
    assert any(p.utc_time.tzinfo is None for p in punches)
    assert any(isinstance(p.utc_time.tzinfo, ZoneInfo) and p.utc_time.utcoffset() for p in punches)
    for punch in punches:
        fast = contract_punches.record_json(punch)
        reference = contract_punches.record_json_dumps(punch)
        assert fast.encode("utf-8") == reference.encode("utf-8"), punch


def test_every_stock_punch_renders_the_same() -> None:
    for n in range(2_000):
        for source in ("poll", "live", "manual", "push"):
            for flags in _FLAG_SETS[:6]:
                punch = make_punch("door-1", n, source=source, flags=flags)
                assert contract_punches.record_json(punch) == contract_punches.record_json_dumps(punch)


def test_the_stored_row_holds_the_same_payload() -> None:
    """`punch_row` hands `record_json` the UTC text it stores; the payload is still the old one."""
    rng = random.Random(7)
    for n in range(5_000):
        punch = _punch(rng, n)
        row = buffer_outbox.punch_row(punch, 1.5)
        assert row[3] == punch.utc_time.isoformat()
        assert row[5] == contract_punches.record_json_dumps(punch)
