"""Mutations of real ZK reply frames (hypothesis), sent by a fake terminal over real TCP and UDP
loopback sockets as its answer to one command of a session (connect, info, full read).

Whatever the mutation, every driver call ends within its deadline with a result or a
DriverError (nothing else escapes), no pool thread is left running, memory stays put, and a
good terminal is read normally afterwards. The frames are the fake terminal's own (built by
the codec) or captured from real terminals (tests/data/zk_vectors.json). A short slice runs
by default; the long runs are `-m long`.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from punchgate.drivers.base import DriverError
from punchgate.drivers.zk import protocol as zp
from punchgate.drivers.zk.driver import ZkDriver
from tests.hostile import fake_zk as fake
from tests.hostile.common import HostileTcpPeer, LoopHeartbeat, RssWatch
from tests.hostile.fake_zk import HostileUdpPeer
from tests.hostile.zk_rig import (
    MAX_RSS_GROWTH_MB,
    busy_pool_threads,
    good_terminal_reads_normally,
    terminal,
)

TIMEOUT = 0.25  # per reply: a mutation that leaves the driver waiting costs this much
# The session's calls and their deadlines (ZkSession.run): connect, info, count, download.
SESSION_DEADLINE = (TIMEOUT * 2 + 5) + 3 * (TIMEOUT * 3 + 5)
MARGIN = 1.5
SHORT = settings(
    max_examples=40,
    deadline=None,  # bounded by the assertion on each example's time instead
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
LONG = settings(SHORT, max_examples=3000)

# Commands of a session whose answer may be replaced, with their captured counterparts.
SLOTS = [
    zp.CMD_CONNECT,
    zp.CMD_GET_FREE_SIZES,
    zp.CMD_GET_TIME,
    zp.CMD_STATE_RRQ,
    zp.CMD_OPTIONS_RRQ,
    zp.CMD_GET_VERSION,
    zp.CMD_PREPARE_BUFFER,
    zp.CMD_READ_BUFFER,
]
INTERESTING_U32 = [0, 1, 7, 8, 1008, 1204, 0xFFC0, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]


# ---- mutations --------------------------------------------------------------------------------


Op = tuple[str, int, int, bytes]


@dataclass(frozen=True)
class Edit:
    """Ops applied in turn; positions are taken modulo the current length (so any op applies)."""

    ops: tuple[Op, ...]

    def __call__(self, data: bytes) -> bytes:
        return apply(self.ops, data)


def apply(ops: tuple[Op, ...], data: bytes) -> bytes:
    out = bytearray(data)
    for kind, position, value, extra in ops:
        at = position % (len(out) + 1)
        if kind == "flip" and out:
            out[at % len(out)] ^= 1 << (value % 8)
        elif kind == "set" and out:
            out[at % len(out)] = value % 256
        elif kind == "truncate":
            del out[at:]
        elif kind == "insert":
            out[at:at] = extra
        elif kind == "repeat":
            piece = bytes(out[at : at + 1 + value % 64])
            out[at:at] = piece * (1 + value % 50)
        elif kind == "u32":
            word = struct.pack("<I", INTERESTING_U32[value % len(INTERESTING_U32)])
            out[at : at + 4] = word
    return bytes(out)


ops = st.lists(
    st.tuples(
        st.sampled_from(["flip", "set", "truncate", "insert", "repeat", "u32"]),
        st.integers(0, 4096),
        st.integers(0, 1 << 16),
        st.binary(max_size=32),
    ),
    min_size=1,
    max_size=4,
)


@st.composite
def mutations(draw: st.DrawFn) -> fake.Mutation:
    command = draw(st.sampled_from(SLOTS))
    captured = fake.CAPTURED_REPLIES.get(command)
    source = draw(st.none() | st.integers(0, len(captured) - 1)) if captured else None
    return fake.Mutation(
        command=command,
        edit=Edit(tuple(draw(ops))),
        captured=source,
        datagram=draw(st.integers(0, 8)),
    )


# ---- the rig ----------------------------------------------------------------------------------


@dataclass
class FuzzRig:
    """One fake terminal, one peer and one event loop for all examples of a test."""

    transport: str
    terminal: fake.FakeTerminal
    port: int
    runner: asyncio.Runner
    slowest: float = 0.0
    max_gap: float = 0.0
    outcomes: dict[str, int] = field(default_factory=dict)


@pytest.fixture(params=["tcp", "udp"])
def rig(request: pytest.FixtureRequest) -> Iterator[FuzzRig]:
    terminal_ = fake.FakeTerminal()
    peer: HostileTcpPeer | HostileUdpPeer = (
        HostileTcpPeer(terminal_.tcp_behaviour(), max_seconds=30)
        if request.param == "tcp"
        else HostileUdpPeer(terminal_)
    )
    with peer, asyncio.Runner() as runner:
        yield FuzzRig(request.param, terminal_, peer.port, runner)
    assert not peer.errors, peer.errors


async def _session(rig: FuzzRig, mutation: fake.Mutation) -> None:
    rig.terminal.attack = mutation
    rig.terminal.received.clear()
    driver = ZkDriver(terminal(rig.port, rig.transport, timeout=TIMEOUT, name="fuzz"))
    outcome = "read"
    async with LoopHeartbeat() as beat:
        started = time.monotonic()
        try:
            # the hard stop only keeps a broken driver from hanging the suite
            async with asyncio.timeout(SESSION_DEADLINE * 2):
                await driver.connect()
                await driver.info()
                await driver.read_records()
        except DriverError as exc:
            outcome = f"{exc.fault}"
        finally:
            await driver.close()
        elapsed = time.monotonic() - started
    rig.outcomes[outcome] = rig.outcomes.get(outcome, 0) + 1
    rig.slowest = max(rig.slowest, elapsed)
    rig.max_gap = max(rig.max_gap, beat.max_gap)
    assert elapsed <= SESSION_DEADLINE + MARGIN, f"the session took {elapsed:.2f} s"


def _fuzz(rig: FuzzRig, settings_: settings) -> None:
    rss = RssWatch()

    @settings_
    @given(mutation=mutations())
    def example(mutation: fake.Mutation) -> None:
        rig.runner.run(_session(rig, mutation))

    example()
    deadline = time.monotonic() + 5
    while busy_pool_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not busy_pool_threads(), busy_pool_threads()
    assert rss.growth_mb < MAX_RSS_GROWTH_MB, f"RSS grew by {rss.growth_mb:.1f} MB"
    print(
        f"\n{rig.transport}: outcomes {rig.outcomes}, slowest session {rig.slowest:.2f} s, "
        f"longest event loop stall {rig.max_gap:.3f} s"
    )
    rig.runner.run(good_terminal_reads_normally(rig.transport))


def test_mutated_replies_end_every_call_in_time(rig: FuzzRig) -> None:
    _fuzz(rig, SHORT)


@pytest.mark.long
def test_mutated_replies_end_every_call_in_time_long(rig: FuzzRig) -> None:
    _fuzz(rig, LONG)
