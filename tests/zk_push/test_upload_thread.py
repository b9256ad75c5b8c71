"""An ATTLOG post costs the event loop one hand-off: the body is parsed in the thread that
normalises and commits it (`PushBackend.commit`'s `read`), never on the loop, large or small.
Over a real socket with a real buffer (the rig of test_receiver.py)."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from punchgate.drivers.zk_push import attlog as attlog_parser
from tests.zk_push.test_receiver import SN, PushRig, open_rig


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[PushRig]:
    async with open_rig(tmp_path) as made:
        yield made


def attlog(count: int) -> bytes:
    return b"".join(
        f"7\t2026-03-02 {n // 60:02d}:{n % 60:02d}:00\t0\t1\t0\t0\t0\n".encode() for n in range(count)
    )


async def test_the_body_is_parsed_off_the_loop_in_the_committing_thread(
    rig: PushRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop_thread = threading.get_ident()
    parsed_in: list[int] = []
    real_parse = attlog_parser.parse_attlog

    def parse(body: bytes, encoding: str) -> attlog_parser.AttlogParse:
        parsed_in.append(threading.get_ident())
        return real_parse(body, encoding)

    monkeypatch.setattr(attlog_parser, "parse_attlog", parse)
    assert await rig.upload(SN, "ATTLOG", attlog(1), stamp="1") == (200, "OK: 1")  # a real-time post
    assert await rig.upload(SN, "ATTLOG", attlog(500) + b"NOT-A-RECORD\n", stamp="501") == (200, "OK: 500")

    assert len(parsed_in) == 2  # once a post
    assert loop_thread not in parsed_in
    assert len(rig.punches()) == 500  # the first post's punch is the 500's first: stored once
    assert [line["text"] for line in rig.meta("door-1")["push_unparsed"]] == ["NOT-A-RECORD"]
