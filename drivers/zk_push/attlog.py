"""ATTLOG bodies: a push terminal's punches, parsed line by line into `RawPunch`es.

Its own module because it is the hot path of a backlog upload (500 lines a post, every post
parsed in the thread that commits it): the line and field rules are the protocol's
(`protocol.py`: `_code`, `_time`, `BadLine`), the shortcuts that keep a line cheap are here.
Never raises for what a terminal sent: a line it cannot read comes back as a `BadLine`.
"""

from __future__ import annotations

import codecs
import datetime as dt
import functools
from dataclasses import dataclass, fields

from punchgate.drivers.base import RawPunch
from punchgate.drivers.zk_push.protocol import MAX_CODE, MAX_PIN, BadLine, _bad, _code, _time


@dataclass(frozen=True, slots=True)
class AttlogParse:
    punches: list[RawPunch]
    bad: list[BadLine]
    lines: int  # non-empty lines in the body


# `RawPunch(...)` runs the frozen dataclass's keyword `__init__` (an `object.__setattr__` per
# field); `_raw_punch` makes the same object with the slots' own setters, at a third of the
# cost (500 of them per backlog post). A field added to `RawPunch` fails here at import.
if tuple(f.name for f in fields(RawPunch)) != RawPunch.__slots__:
    raise ImportError("RawPunch's slots are not its fields in order")
_set_user, _set_time, _set_state, _set_verify, _set_work, _set_raw = (
    getattr(RawPunch, name).__set__ for name in RawPunch.__slots__
)


def _raw_punch(
    user_id: str, when: dt.datetime, state: int, verify: int, work_code: int, raw: bytes
) -> RawPunch:
    punch: RawPunch = object.__new__(RawPunch)
    _set_user(punch, user_id)
    _set_time(punch, when)
    _set_state(punch, state)
    _set_verify(punch, verify)
    _set_work(punch, work_code)
    _set_raw(punch, raw)
    return punch


def parse_attlog_line(text: str, raw: bytes = b"") -> RawPunch:
    """One ATTLOG line as a RawPunch; ValueError naming the problem otherwise."""
    fields = text.split("\t")
    if len(fields) < 2:
        raise ValueError("not TAB-separated fields (PIN, time, status, verify, …)")
    pin = fields[0].strip()
    if not pin:
        raise ValueError("no user id (PIN)")
    if len(pin) > MAX_PIN or not pin.isprintable():
        raise ValueError("the user id (PIN) is too long or holds control characters")
    when = _time(fields[1])
    state = _code(fields[2], "status") if len(fields) > 2 else 0
    verify = _code(fields[3], "verify") if len(fields) > 3 else 0
    work = fields[4].strip() if len(fields) > 4 else ""
    # Some firmware put text in the work-code column; the id does not use it, and the raw line
    # travels with the punch, so anything but a number counts as no work code.
    work_code = int(work) if work.isdigit() and work.isascii() and len(work) <= 10 else 0
    if work_code > MAX_CODE:
        work_code = 0
    return _raw_punch(pin, when, state, verify, work_code, raw)


# Encodings in which ASCII bytes always stand for themselves (no shift states, no lead byte
# below 0x80): a line of only ASCII bytes reads the same decoded as ASCII, at half the cost of
# the multi-byte codecs (gb18030 above all). Others always take their own codec.
_ASCII_SUPERSETS = frozenset(
    [
        "utf-8",
        "ascii",
        "latin-1",
        "iso8859-1",
        "gb18030",
        "gbk",
        "gb2312",
        "big5",
        "big5hkscs",
        "euc_kr",
        "cp949",
        "cp874",
        "cp1250",
        "cp1251",
        "cp1252",
        "cp1253",
        "cp1254",
        "cp1255",
        "cp1256",
        "cp1257",
        "cp1258",
    ]
)


@functools.cache
def _ascii_compatible(encoding: str) -> bool:
    try:
        return codecs.lookup(encoding).name in _ASCII_SUPERSETS
    except LookupError:
        return False


def parse_attlog(body: bytes, encoding: str) -> AttlogParse:
    punches: list[RawPunch] = []
    bad: list[BadLine] = []
    lines = 0
    parse_line = parse_attlog_line
    ascii_first = _ascii_compatible(encoding)
    # `body_lines` and `decode` inline: a backlog post is 500 lines, and a generator step and
    # two calls a line were a tenth of its parse.
    for number, raw in enumerate(body.split(b"\n"), start=1):
        raw = raw.rstrip(b"\r")
        if not raw.strip():
            continue
        lines += 1
        if ascii_first and raw.isascii():  # the usual line: digits, a time, TABs
            text = raw.decode("ascii")
        else:
            text = raw.decode(encoding, errors="replace")
        try:
            punches.append(parse_line(text, raw))
        except ValueError as exc:
            bad.append(_bad(number, raw, text, str(exc)))
    return AttlogParse(punches, bad, lines)
