"""`LogIntake`: a full read taken part by part against the part of the log already stored.

Pure logic on records (no terminal): what each part hands on to be stored, what is skipped,
and what the read may say is stored (`known()`) after each commit, including a read cut short.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from punchgate.drivers.base import RawPunch
from punchgate.gateway.worker_known_log import KnownLog, LogHasher, LogIntake

SEED = "1\x1fSERIAL\x1fzk\x1futf-8"
START = dt.datetime(2026, 11, 1, 8)


def core(known: KnownLog | None) -> tuple[int, bytes] | None:
    """A known log's count and digest (its anchor, the last record's bytes, aside)."""
    return None if known is None else (known.count, known.digest)


def log(n: int, *, first: int = 0) -> list[RawPunch]:
    return [
        RawPunch(
            user_id=str(i % 7),
            timestamp=START + dt.timedelta(minutes=i),
            state=i % 2,
            verify=1,
            raw=i.to_bytes(4, "little") * 10,
        )
        for i in range(first, first + n)
    ]


def digest(raws: Sequence[RawPunch]) -> bytes:
    hasher = LogHasher(SEED)
    hasher.feed(raws)
    return hasher.digest()


def read(intake: LogIntake, raws: list[RawPunch], part: int, *, upto: int | None = None) -> list[RawPunch]:
    """Feed `raws` in parts of `part` records, committing what is handed on; stop (a cut)
    after `upto` records, else finish. Returns what was handed on."""
    handed: list[RawPunch] = []
    end = len(raws) if upto is None else upto
    for start in range(0, end, part):
        out = intake.take(raws[start : min(start + part, end)])
        intake.committed(out)
        handed += out
    if upto is None:
        out = intake.finish()
        intake.committed(out)
        handed += out
    return handed


def test_without_a_stored_prefix_every_part_is_handed_on_as_it_comes() -> None:
    raws = log(10)
    intake = LogIntake(None, SEED)
    assert list(intake.take(raws[:4])) == raws[:4]
    intake.committed(raws[:4])
    assert core(intake.known()) == (4, digest(raws[:4]))
    assert list(intake.take(raws[4:])) == raws[4:]
    intake.committed(raws[4:])
    assert intake.finish() == []
    assert core(intake.known()) == (10, digest(raws))
    assert (intake.count, intake.skipped) == (10, 0)


def test_a_matching_prefix_is_held_then_skipped_and_only_the_rest_is_handed_on() -> None:
    raws = log(25)
    known = KnownLog(10, digest(raws[:10]))
    intake = LogIntake(known, SEED)
    assert intake.take(raws[:4]) == []
    assert intake.known() == known  # nothing decided yet: the previous read's
    assert list(intake.take(raws[4:12])) == raws[10:12]
    assert intake.skipped == 10 and intake.newest_skipped() == raws[9]
    intake.committed(raws[10:12])
    assert core(intake.known()) == (12, digest(raws[:12]))
    assert read(intake, raws[12:], 5) == raws[12:]
    assert core(intake.known()) == (25, digest(raws))


def test_a_rewritten_log_of_the_same_length_or_longer_is_handed_on_whole() -> None:
    old = log(10)
    new = log(15, first=100)
    intake = LogIntake(KnownLog(10, digest(old)), SEED)
    assert read(intake, new, 4) == new
    assert intake.skipped == 0 and intake.newest_skipped() is None
    assert core(intake.known()) == (15, digest(new))


def test_a_log_shorter_than_the_stored_prefix_is_handed_on_at_the_end() -> None:
    old = log(10)
    intake = LogIntake(KnownLog(10, digest(old)), SEED)
    shorter = old[:6]
    assert intake.take(shorter) == []
    assert intake.finish() == shorter
    intake.committed(shorter)
    assert core(intake.known()) == (6, digest(shorter))


def test_a_read_cut_short_keeps_what_it_stored_and_the_next_skips_exactly_that() -> None:
    raws = log(30)
    first = LogIntake(KnownLog(5, digest(raws[:5])), SEED)
    handed = read(first, raws, 7, upto=21)  # cut after three parts
    assert handed == raws[5:21]
    known = first.known()
    assert core(known) == (21, digest(raws[:21]))
    second = LogIntake(known, SEED)
    assert read(second, raws, 7) == raws[21:]
    assert second.skipped == 21
