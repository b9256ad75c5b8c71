"""The ATTLOG parse's fast paths (lines read in one loop, ASCII lines decoded as ASCII, times
read by `fromisoformat` once the pattern matched, `RawPunch`es built through their slots) give
exactly what the plain per-line parse gives: the same punches, the same bad lines.

The reference below is the parse as it was before: `body_lines`, `decode` in the terminal's
encoding, six `int()`s for the time, `RawPunch(...)` with keywords."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re

import pytest

from punchgate.drivers.base import RawPunch
from punchgate.drivers.zk_push import attlog, protocol

_TIME = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})[ T]([0-9]{2}):([0-9]{2}):([0-9]{2})")


def reference_time(value: str) -> dt.datetime:
    value = value.strip()
    try:
        if _TIME.fullmatch(value) is None:
            raise ValueError
        return dt.datetime(
            int(value[0:4]),
            int(value[5:7]),
            int(value[8:10]),
            int(value[11:13]),
            int(value[14:16]),
            int(value[17:19]),
        )
    except ValueError:
        raise ValueError(f"time {value[:40]!r} is not YYYY-MM-DD HH:MM:SS") from None


def reference_line(text: str, raw: bytes) -> RawPunch:
    fields = text.split("\t")
    if len(fields) < 2:
        raise ValueError("not TAB-separated fields (PIN, time, status, verify, …)")
    pin = fields[0].strip()
    if not pin:
        raise ValueError("no user id (PIN)")
    if len(pin) > protocol.MAX_PIN or not pin.isprintable():
        raise ValueError("the user id (PIN) is too long or holds control characters")
    when = reference_time(fields[1])
    state = protocol._code(fields[2], "status") if len(fields) > 2 else 0
    verify = protocol._code(fields[3], "verify") if len(fields) > 3 else 0
    work = fields[4].strip() if len(fields) > 4 else ""
    work_code = int(work) if work.isdigit() and work.isascii() and len(work) <= 10 else 0
    if work_code > protocol.MAX_CODE:
        work_code = 0
    return RawPunch(user_id=pin, timestamp=when, state=state, verify=verify, work_code=work_code, raw=raw)


def reference(body: bytes, encoding: str) -> attlog.AttlogParse:
    punches: list[RawPunch] = []
    bad: list[protocol.BadLine] = []
    lines = 0
    for number, raw in protocol.body_lines(body):
        lines += 1
        text = raw.decode(encoding, errors="replace")
        try:
            punches.append(reference_line(text, raw))
        except ValueError as exc:
            bad.append(protocol._bad(number, raw, text, str(exc)))
    return attlog.AttlogParse(punches, bad, lines)


LINES = [
    "1\t2026-03-02 08:01:15\t0\t1\t0\t0\t0",
    "0042\t2026-03-02T08:01:15\t4\t2\t17\t0\t0\t\t",
    " 7 \t 2026-03-02 08:01:15 \t 1 \t 15 ",
    "7\t2026-03-02 08:01:15",  # short firmware lines
    "7\t2026-03-02 08:01:15\t0\t1\tA1",
    "7\t2026-03-02 08:01:15\t0\t1\t99999999999",
    "张三\t2026-03-02 08:01:15\t0\t1\t0",  # a PIN in the terminal's encoding
    "8\t2026-13-02 08:01:15\t0\t1",  # month 13
    "8\t2026-02-30 08:01:15\t0\t1",  # 30 February
    "8\t2026-03-02 24:00:00\t0\t1",  # hour 24
    "8\t2026-03-02 08:01:60\t0\t1",  # second 60
    "8\t0000-03-02 08:01:15\t0\t1",  # year 0
    "8\t2026-03-02\t0\t1",
    "8\t2026-03-02 08:01\t0\t1",
    "8\t２０２６-03-02 08:01:15\t0\t1",  # full-width digits
    "8\t2026-03-02 08:01:15.5\t0\t1",
    "8\t2026-03-02 08:01:15+08:00\t0\t1",
    "8\t20260302T080115\t0\t1",
    "8\t2026-03-02 08:01:15\tx\t1",
    "8\t2026-03-02 08:01:15\t0\t-1",
    "8\t2026-03-02 08:01:15\t2147483648\t1",
    "\t2026-03-02 08:01:15\t0\t1",
    "a\x07b\t2026-03-02 08:01:15\t0\t1",
    "x" * 65 + "\t2026-03-02 08:01:15\t0\t1",
    "no tabs at all",
    "   ",
    "",
]


@pytest.mark.parametrize("encoding", ["gb18030", "utf-8", "latin-1", "shift_jis", "cp1252"])
@pytest.mark.parametrize("ending", [b"\n", b"\r\n"])
def test_the_parse_reads_what_the_plain_parse_reads(encoding: str, ending: bytes) -> None:
    encoded = [line.encode(encoding, errors="replace") for line in LINES]
    # Undecodable bytes, on their own and in the PIN of an otherwise good line.
    encoded += [b"\xff\xfe\t2026-03-02 08:01:15\t0\t1", b"9\x81\t2026-03-02 08:01:15\t0\t1", b"\x81"]
    body = ending.join(encoded * 3) + ending

    parsed = attlog.parse_attlog(body, encoding)

    expected = reference(body, encoding)
    assert parsed.lines == expected.lines
    assert parsed.bad == expected.bad
    assert parsed.punches == expected.punches
    for made, want in zip(parsed.punches, expected.punches, strict=True):
        assert type(made) is RawPunch
        for field in dataclasses.fields(RawPunch):
            assert getattr(made, field.name) == getattr(want, field.name)
    assert len(parsed.punches) >= 3 * 8  # the comparison is not between two empty lists


def test_only_encodings_where_ascii_is_ascii_take_the_ascii_path() -> None:
    assert attlog._ascii_compatible("GB18030")
    assert attlog._ascii_compatible("utf8")
    assert attlog._ascii_compatible("windows-1252")
    # Shift states (ESC sequences are ASCII bytes) or ASCII-range bytes standing for other
    # characters: their own codec always.
    assert not attlog._ascii_compatible("iso2022_jp")
    assert not attlog._ascii_compatible("utf-16")
    assert not attlog._ascii_compatible("shift_jis")
    assert not attlog._ascii_compatible("no-such-codec")


def test_a_line_with_escape_sequences_reads_as_its_codec_reads_it() -> None:
    line = "田中\t2026-03-02 08:01:15\t0\t1".encode("iso2022_jp")
    assert line.isascii()  # all ASCII bytes, yet not ASCII text
    parsed = attlog.parse_attlog(line + b"\n", "iso2022_jp")
    assert [p.user_id for p in parsed.punches] == ["田中"]
