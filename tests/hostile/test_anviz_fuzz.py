"""Mutations of real Anviz frames (hypothesis), against the frame decoder alone and against the
driver over TCP and a real pseudo-terminal, where the peer sends a mutated frame before each
real reply. A short slice runs by default; the long runs are `-m long`."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from punchgate.drivers.anviz import codec, frame_decoder
from punchgate.drivers.anviz.codec import FrameDecoder, Garbage, Request, Response
from punchgate.drivers.anviz.driver import AnvizDriver
from punchgate.drivers.anviz.emulator import EmulatedTerminal, PtyBus, TcpServer
from punchgate.drivers.anviz.endpoint import parse_endpoint
from punchgate.drivers.anviz.frame_decoder import MAX_HELD_NOISE
from punchgate.drivers.anviz.payloads import max_data_length
from punchgate.drivers.base import DriverError
from tests.hostile import anviz_attacks as attacks
from tests.hostile.common import HostilePty, HostileTcpPeer, LoopHeartbeat, RssWatch

LONGEST_FRAME = 11 + max(max_data_length(code) for code in range(256))
TIMEOUT = 0.15
ATTEMPTS = 2
MARGIN = 1.0
MAX_STALL = 0.5
SHORT = settings(
    max_examples=200,
    deadline=2000,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
LONG = settings(SHORT, max_examples=3000)


# ---- the decoder alone ---------------------------------------------------------------------


def _chunks(data: bytes, cuts: list[int]) -> Iterator[bytes]:
    edges = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    for start, end in itertools.pairwise(edges):
        yield data[start:end]


def _raw(item: Request | Response | Garbage) -> bytes:
    return item.encode() if isinstance(item, Request) else item.raw


def check_decoder(stream: bytes, cuts: list[int]) -> None:
    """Whatever the bytes and however they are cut: every byte comes out once, in order, as a
    frame or as garbage; frames are valid; the decoder holds little; each CRC is computed once
    per start byte at most."""
    crc_calls: list[int] = []

    def counting_crc(data: bytes | bytearray) -> int:
        crc_calls.append(len(data))
        return codec.crc16(data)

    decoder = FrameDecoder()
    out: list[Request | Response | Garbage] = []
    with mock.patch.object(frame_decoder, "crc16", counting_crc):
        for chunk in _chunks(stream, cuts):
            out += decoder.feed(chunk)
            assert len(decoder.pending) < MAX_HELD_NOISE + LONGEST_FRAME
        flushed = decoder.flush()
    out += [flushed] if flushed is not None else []
    assert b"".join(_raw(item) for item in out) == stream
    for item in out:
        if isinstance(item, Garbage):
            assert item.raw and item.reason
        else:
            raw = _raw(item)
            assert codec.crc16(raw[:-2]) == int.from_bytes(raw[-2:], "little")
            assert len(item.data) <= max_data_length(raw[5])
    assert len(crc_calls) <= stream.count(codec.STX)
    assert sum(crc_calls) <= stream.count(codec.STX) * LONGEST_FRAME


@SHORT
@given(stream=attacks.mutated_stream(), cuts=st.lists(st.integers(0, 2000), max_size=8))
def test_decoder_accounts_for_every_byte_of_mutated_frames(stream: bytes, cuts: list[int]) -> None:
    check_decoder(stream, cuts)


@pytest.mark.long
@settings(LONG, max_examples=20_000)
@given(stream=attacks.mutated_stream(), cuts=st.lists(st.integers(0, 2000), max_size=8))
def test_decoder_accounts_for_every_byte_of_mutated_frames_long(stream: bytes, cuts: list[int]) -> None:
    check_decoder(stream, cuts)


@SHORT
@given(
    frames=st.lists(st.sampled_from(attacks.REAL_FRAMES), min_size=1, max_size=6),
    cuts=st.lists(st.integers(0, 3000), max_size=10),
)
def test_real_frames_come_out_whole_however_they_are_cut(frames: list[bytes], cuts: list[int]) -> None:
    decoder = FrameDecoder()
    out = [item for chunk in _chunks(b"".join(frames), cuts) for item in decoder.feed(chunk)]
    assert [_raw(item) for item in out] == frames
    assert decoder.pending == b""


# ---- the driver, with a peer that sends a mutated frame before each real reply ------------


@dataclass
class FuzzRig:
    """One mutating peer and one event loop for all examples of a test, and what they saw."""

    transport: str
    peer_terminal: attacks.MutatingTerminal
    url: str
    runner: asyncio.Runner
    expected: codec.RecordInfo
    max_gap: float = 0.0
    answered: int = 0
    failed: dict[str, int] = field(default_factory=dict)


@pytest.fixture(params=["tcp", "serial"])
def rig(request: pytest.FixtureRequest) -> Iterator[FuzzRig]:
    terminal = EmulatedTerminal(attacks.DEVICE_ID)
    terminal.add_history(12)
    mutating = attacks.MutatingTerminal(terminal)
    expected = codec.RecordInfo.decode(
        codec.decode_frame(terminal.handle(Request(attacks.DEVICE_ID, codec.CMD_GET_RECORD_INFO))[0]).data
    )
    peer: HostileTcpPeer | HostilePty
    if request.param == "tcp":
        peer = HostileTcpPeer(mutating.behaviour(), max_seconds=600).start()
        url = f"tcp://{peer.host}:{peer.port}"
    else:
        peer = HostilePty(mutating.behaviour(), max_seconds=600).start()
        url = f"serial://{peer.path}?gap_ms=0&quiet_ms=30"
    with asyncio.Runner() as runner:
        yield FuzzRig(request.param, mutating, url, runner, expected)
    peer.stop()
    assert not peer.errors


async def _one_example(rig: FuzzRig, prefix: bytes) -> None:
    rig.peer_terminal.prefix = prefix
    driver = AnvizDriver(
        name="fuzz",
        endpoint=parse_endpoint(rig.url),
        device_id=attacks.DEVICE_ID,
        timeout=TIMEOUT,
        attempts=ATTEMPTS,
        live=False,
    )
    try:
        async with LoopHeartbeat() as beat:
            started = time.monotonic()
            try:
                info = await asyncio.wait_for(driver.record_info(), ATTEMPTS * TIMEOUT + MARGIN + 10)
            except DriverError as exc:
                kind = type(exc).__name__
                rig.failed[kind] = rig.failed.get(kind, 0) + 1
            else:
                rig.answered += 1
                if not attacks.holds_answer(prefix, codec.CMD_GET_RECORD_INFO | 0x80):
                    assert info == rig.expected  # the mutation made no valid reply of its own
            elapsed = time.monotonic() - started
            slowdown = beat.slowdown()  # 1.0 with a core to spare; more while others crowd them
    finally:
        await driver.close()
    rig.max_gap = max(rig.max_gap, beat.max_own_gap)
    budget = ATTEMPTS * TIMEOUT + MARGIN
    assert elapsed <= budget * slowdown, f"the call took {elapsed:.2f}s (budget {budget:g}s x {slowdown:.2f})"
    assert beat.max_own_gap < MAX_STALL, (
        f"the event loop stalled for {beat.max_own_gap:.3f}s ({beat.max_gap:.3f}s)"
    )


def _good_terminal_reads_normally(rig: FuzzRig) -> None:
    terminal = EmulatedTerminal(attacks.DEVICE_ID)
    terminal.add_history(30)

    async def read(url: str) -> None:
        driver = AnvizDriver(
            name="good", endpoint=parse_endpoint(url), device_id=attacks.DEVICE_ID, timeout=0.3
        )
        try:
            assert len(await driver.read_records()) == 30
        finally:
            await driver.close()

    if rig.transport == "tcp":
        with TcpServer([terminal]) as server:
            rig.runner.run(read(f"tcp://127.0.0.1:{server.port}"))
    else:
        with PtyBus([terminal]) as bus:
            rig.runner.run(read(f"serial://{bus.path}?gap_ms=0&quiet_ms=40"))


def _fuzz_driver(rig: FuzzRig, settings_: settings) -> None:
    rss = RssWatch()

    @settings_
    @given(prefix=attacks.mutated_stream())
    def example(prefix: bytes) -> None:
        rig.runner.run(_one_example(rig, prefix))

    example()
    assert rss.growth_mb < 50, f"RSS grew by {rss.growth_mb:.1f} MB"
    # the real reply follows every mutation, so most calls still get it
    assert rig.answered > sum(rig.failed.values()), (rig.answered, rig.failed)
    _good_terminal_reads_normally(rig)


def test_driver_survives_mutated_frames(rig: FuzzRig) -> None:
    _fuzz_driver(rig, settings(SHORT, max_examples=200 if rig.transport == "tcp" else 60))


@pytest.mark.long
def test_driver_survives_mutated_frames_long(rig: FuzzRig) -> None:
    _fuzz_driver(rig, settings(LONG, max_examples=3000 if rig.transport == "tcp" else 1000))
