"""Hostile Anviz peers over TCP and a real pseudo-terminal: the driver's call ends in time with
the right error, the event loop keeps beating, memory stays bounded, and a good terminal is read
normally afterwards in the same process."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass

import pytest
from structlog.testing import capture_logs

from punchgate.drivers.anviz.driver import AnvizDriver, raw_punch
from punchgate.drivers.anviz.emulator import EmulatedTerminal, PtyBus, TcpServer
from punchgate.drivers.anviz.endpoint import parse_endpoint
from punchgate.drivers.anviz.frames import LOG_PREVIEW_BYTES
from punchgate.drivers.anviz.link import LOG_BURST
from punchgate.drivers.anviz.transport import TcpLink
from punchgate.drivers.base import ProtocolError, UnreachableError
from tests.hostile import anviz_attacks as attacks
from tests.hostile.common import Behaviour, HostilePty, HostileTcpPeer, LoopHeartbeat, RssWatch
from tests.support.waiting import wait_until_async

TIMEOUT = 0.3  # per reply, as configured on the driver
ATTEMPTS = 3
MARGIN = 1.0  # on top of ATTEMPTS * TIMEOUT: thread hand-offs, the serial bus's gaps, a busy CI
MAX_STALL = 0.5  # longest the event loop may go without running the heartbeat
MAX_RSS_GROWTH_MB = 50
SERIAL_OPTIONS = "gap_ms=0&quiet_ms=40"

Peer = HostileTcpPeer | HostilePty
DriverFactory = Callable[[str], AnvizDriver]


@dataclass(frozen=True)
class Attack:
    name: str
    behaviour: Callable[[], Behaviour]
    logged: str  # a reason among the garbage logged, or the event logged instead


ATTACKS = [
    Attack("flood of 0xA5", attacks.flood, "LEN 42405 over the maximum 600 for 0xA5"),
    Attack(
        "LEN 0xFFFF then a trickle",
        lambda: attacks.huge_length_then_trickle(bytes.fromhex("a500000001bc00ffff")),
        "LEN 65535 over the maximum 18 for 0xBC",
    ),
    Attack(
        "the longest LEN a reply may have, then a trickle",
        lambda: attacks.huge_length_then_trickle(bytes.fromhex("a500000001c000015f")),
        "incomplete frame",
    ),
    Attack(
        "endless frames for someone else",
        lambda: attacks.endless_frames(attacks.other_devices_frames()),
        "unexpected",
    ),
    Attack("random bytes", lambda: attacks.random_bytes(seed=20240), "noise before start byte"),
]


@pytest.fixture
async def make_driver() -> AsyncIterator[DriverFactory]:
    drivers: list[AnvizDriver] = []

    def make(endpoint: str) -> AnvizDriver:
        driver = AnvizDriver(
            name="hostile",
            endpoint=parse_endpoint(endpoint),
            device_id=attacks.DEVICE_ID,
            timeout=TIMEOUT,
            attempts=ATTEMPTS,
        )
        drivers.append(driver)
        return driver

    yield make
    await asyncio.gather(*(d.close() for d in drivers))


def _url(peer: Peer) -> str:
    if isinstance(peer, HostileTcpPeer):
        return f"tcp://{peer.host}:{peer.port}"
    return f"serial://{peer.path}?{SERIAL_OPTIONS}"


def _peer(transport: str, behaviour: Behaviour) -> Peer:
    return HostileTcpPeer(behaviour) if transport == "tcp" else HostilePty(behaviour)


async def _good_terminal_reads_normally(transport: str, make_driver: DriverFactory) -> None:
    terminal = EmulatedTerminal(attacks.DEVICE_ID)
    terminal.add_history(30)
    if transport == "tcp":
        with TcpServer([terminal]) as server:
            records = await make_driver(f"tcp://127.0.0.1:{server.port}").read_records()
    else:
        with PtyBus([terminal]) as bus:
            records = await make_driver(f"serial://{bus.path}?{SERIAL_OPTIONS}").read_records()
    assert records == [raw_punch(r, terminal.epoch) for r in terminal.records]


def _check_time(seconds: float, budget: float, slowdown: float, what: str) -> None:
    """Within the budget, scaled by how much slower than asked the loop's heartbeat ran (1.0
    on a machine with a core to spare; more while other processes crowd the shared cores)."""
    assert seconds <= budget * slowdown, f"{what} took {seconds:.2f}s (budget {budget:g}s x {slowdown:.2f})"


async def _timed_close(driver: AnvizDriver) -> float:
    """Close the driver; the seconds that took."""
    closing = time.monotonic()
    await driver.close()
    return time.monotonic() - closing


def _check_call_and_close(elapsed: float, close_time: float, slowdown: float) -> None:
    """The call ended within its attempts' timeouts and the close within one (plus the margin)."""
    _check_time(elapsed, ATTEMPTS * TIMEOUT + MARGIN, slowdown, "the call")
    _check_time(close_time, TIMEOUT + MARGIN, slowdown, "closing")


def _check_loop_and_memory(beat: LoopHeartbeat, rss: RssWatch) -> None:
    """The event loop kept beating, and memory stayed bounded."""
    assert beat.max_own_gap < MAX_STALL, (
        f"the event loop stalled for {beat.max_own_gap:.3f}s ({beat.max_gap:.3f}s)"
    )
    assert rss.growth_mb < MAX_RSS_GROWTH_MB, f"RSS grew by {rss.growth_mb:.1f} MB"


def _check_logs(logs: Sequence[Mapping[str, object]], expected: str, seconds: float) -> None:
    """What was discarded is logged, with a reason, its raw bytes truncated, within the budget."""
    discarded = [e for e in logs if e["event"] in ("anviz_garbage_discarded", "anviz_unexpected_frame")]
    assert discarded, "what was discarded is logged"
    for event in discarded:
        assert event["device"] == "hostile"
        raw = str(event.get("raw", ""))
        assert len(raw) <= 2 * LOG_PREVIEW_BYTES + 32, f"raw bytes are not truncated: {raw}"
    reasons = {str(e.get("reason", "")) for e in discarded} | {str(e["event"]) for e in discarded}
    assert any(expected in reason for reason in reasons), reasons
    assert len(discarded) <= LOG_BURST * (seconds + 1), "the log budget holds"


@pytest.mark.parametrize("transport", ["tcp", "serial"])
@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
async def test_an_attack_ends_the_call_in_time_with_a_reason_and_harms_nothing(
    attack: Attack, transport: str, make_driver: DriverFactory
) -> None:
    rss = RssWatch()
    with capture_logs() as logs, _peer(transport, attack.behaviour()) as peer:
        driver = make_driver(_url(peer))
        async with LoopHeartbeat() as beat:
            started = time.monotonic()
            with pytest.raises(ProtocolError, match="only garbage after 3 attempts") as failure:
                # the hard stop only keeps a broken driver from hanging the suite
                await asyncio.wait_for(driver.connect(), ATTEMPTS * TIMEOUT + MARGIN + 10)
            elapsed = time.monotonic() - started
            slowdown = beat.slowdown()
            link = driver.link
            if isinstance(link, TcpLink) and attack.name in ("flood of 0xA5", "random bytes"):
                # the connection stays open until the worker closes it: the reader goes on
                # decoding the flood meanwhile, and the loop must go on beating through it
                seen = link.stats.garbage_bytes
                await wait_until_async(
                    lambda: link.stats.garbage_bytes >= seen + 2_000_000,
                    timeout=20,
                    message="the reader decodes 2 MB more of the attack",
                )
            close_time = await _timed_close(driver)
        assert not peer.errors
    _check_call_and_close(elapsed, close_time, slowdown)
    _check_loop_and_memory(beat, rss)
    assert failure.value.fault == "protocol_error"
    stats = driver.link.stats
    assert stats.garbage_frames + stats.unexpected_frames > 0, "what was discarded is counted"
    _check_logs(logs, attack.logged, seconds=time.monotonic() - started)
    await _good_terminal_reads_normally(transport, make_driver)


async def test_heartbeats_from_a_peer_that_reads_nothing_cost_bounded_memory(
    make_driver: DriverFactory,
) -> None:
    """Every heartbeat wants a pong; a peer that never reads them must not make us queue pongs
    (or the request) without limit, nor hang the call or the close."""
    rss = RssWatch()
    behaviour = attacks.never_reading(attacks.endless_frames(attacks.heartbeats(), batch=400))
    with HostileTcpPeer(behaviour, receive_buffer=4096) as peer:
        driver = make_driver(_url(peer))
        link = driver.link
        assert isinstance(link, TcpLink)
        await link.open()
        assert link._writer is not None
        # a small kernel send buffer, so that the test need not fill megabytes to get there
        link._writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        async with LoopHeartbeat() as beat:
            started = time.monotonic()
            with pytest.raises(UnreachableError, match="no answer after 3 attempts"):
                await driver.connect()
            elapsed = time.monotonic() - started
            slowdown = beat.slowdown()
            await wait_until_async(
                lambda: link.stats.unanswered_heartbeats > 0, timeout=20, message="pongs held back"
            )
            close_time = await _timed_close(driver)
        assert not peer.errors
    _check_call_and_close(elapsed, close_time, slowdown)
    _check_loop_and_memory(beat, rss)
    await _good_terminal_reads_normally("tcp", make_driver)


async def test_endless_pushes_fill_a_bounded_queue_and_polling_still_works(
    make_driver: DriverFactory,
) -> None:
    """Real-time pushes nobody consumes: the queue stops at its size, the rest is logged (within
    the log budget) and left on the terminal for the next poll."""
    rss = RssWatch()
    with capture_logs() as logs, HostileTcpPeer(attacks.endless_frames(attacks.pushes())) as peer:
        driver = make_driver(_url(peer))
        link = driver.link
        assert isinstance(link, TcpLink)
        async with LoopHeartbeat() as beat:
            with pytest.raises(UnreachableError, match="no answer"):
                await driver.connect()
            await wait_until_async(lambda: link.pushes.full(), timeout=20, message="push queue full")
            await driver.close()
        assert not peer.errors
    _check_loop_and_memory(beat, rss)
    full = [e for e in logs if e["event"] == "anviz_push_queue_full"]
    assert 0 < len(full) < link.stats.log_lines_suppressed + len(full)
    await _good_terminal_reads_normally("tcp", make_driver)
