"""A grown log is read from its last stored record on (gateway/worker_tail.py, the ZK driver's
READ_BUFFER from an offset), against the ZK emulator over real TCP and a real buffer file; and
never at the price of a punch: a log rewritten under the stored part is read whole, and a
whole read still comes every `reconcile_polls` polls however the count moves."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from punchgate.drivers.config import TerminalConfig
from punchgate.drivers.zk import protocol as zp
from punchgate.drivers.zk.emulator import dispatch
from punchgate.drivers.zk.emulator.replies import ack
from punchgate.gateway.worker_known_log import reconcile_polls_for
from tests.gateway.conftest import Rig
from tests.support.waiting import wait_until_async


async def test_a_grown_log_is_read_from_its_last_stored_record(rig_factory: Any) -> None:
    rig: Rig = await rig_factory(records=2000)
    packets = rig.emulator.counters.packets
    rig.normalised[0] = 0
    for round_ in range(3):
        for user in ("1", "2"):
            rig.emulator.add_punch(user, state=round_ % 2)
        await rig.poll()
    assert (rig.worker.full_reads, rig.worker.tail_reads, rig.driver.reads) == (1, 3, 1)
    assert rig.normalised[0] == 6, "stored records were normalised again"
    assert rig.stored_ids() == rig.terminal_ids()
    # 2,000 records of 40 bytes are 80 packets a whole read; the three tails took a few each.
    assert rig.emulator.counters.packets - packets < 60
    rig.emulator.add_punch("3")
    await rig.restart()  # a restarted gateway goes on from the known log kept in the buffer
    assert (rig.worker.full_reads, rig.worker.tail_reads, rig.driver.reads) == (0, 1, 0)
    # From the known log the meta holds (the whole read's: tails write it lazily), so the six
    # stored by the tails are read again, and the new one: 6 + 7 normalised, none stored twice.
    assert rig.stored_ids() == rig.terminal_ids() and rig.normalised[0] == 13


async def test_a_log_rewritten_under_the_stored_part_is_read_whole(rig_factory: Any) -> None:
    rig: Rig = await rig_factory(records=300)
    await rig.emulator.set_fault("log_cleared")
    start = rig.emulator.now() - dt.timedelta(hours=3)
    for n in range(310):  # more records than stored: the count alone says "grown"
        rig.emulator.add_punch(str(1 + n % 20), start + dt.timedelta(seconds=30 * n), state=n % 2)
    new = rig.terminal_ids() - rig.stored_ids()
    assert len(new) == 310
    rig.normalised[0] = 0
    await rig.poll()
    assert (rig.worker.full_reads, rig.worker.tail_reads) == (2, 0), "the tail was taken as new"
    assert new <= rig.stored_ids()
    assert rig.normalised[0] == 310  # every record checked: the stored part was not there


async def test_a_whole_read_still_comes_within_the_bound(rig_factory: Any) -> None:
    rig: Rig = await rig_factory(records=100, reconcile_polls=3)
    for n in range(3):
        rig.emulator.add_punch(str(n + 1))
        await rig.poll()
    # Two tails, then the third poll since the whole read reads whole, though the log grew;
    # the stored part, two tails chained onto a whole read's digest, is recognised as stored.
    assert (rig.worker.tail_reads, rig.worker.full_reads) == (2, 2)
    assert rig.normalised[0] == 100 + 3, "the chained known log was not recognised"
    rig.emulator.add_punch("4")
    await rig.poll()
    assert (rig.worker.tail_reads, rig.worker.full_reads) == (3, 2)
    assert rig.stored_ids() == rig.terminal_ids()


async def test_a_log_growing_at_every_poll_is_read_whole_only_at_the_default_bound(rig_factory: Any) -> None:
    # The default: 30 s polls, a whole read an hour. The tails chained onto one whole read must
    # not run out before that (they once did at 64: such a log was read whole every ~37 min).
    every = reconcile_polls_for(TerminalConfig.model_fields["full_read_every"].default, 30.0)
    assert every == 120
    rig: Rig = await rig_factory(records=100, reconcile_polls=every)
    for n in range(every):
        rig.emulator.add_punch(str(1 + n % 7))
        await rig.poll()
        if n == every - 2:  # one poll before the bound: every poll so far a tail read
            assert (rig.worker.tail_reads, rig.worker.full_reads) == (every - 1, 1)
    assert (rig.worker.tail_reads, rig.worker.full_reads) == (every - 1, 2)
    assert rig.normalised[0] == 100 + every, "the chained known log was not recognised"
    assert rig.stored_ids() == rig.terminal_ids()


async def test_tail_reads_write_the_device_meta_lazily_and_a_restart_goes_on_from_it(
    rig_factory: Any,
) -> None:
    rig: Rig = await rig_factory(records=500)
    writes = rig.store.meta_writes
    for user in ("1", "2", "3"):
        rig.emulator.add_punch(user)
        await rig.poll()
    assert rig.worker.tail_reads == 3
    assert rig.store.meta_writes == writes, "each tail read wrote the meta (an fsynced commit)"
    # The meta still holds the whole read's known log: the restarted gateway goes on from its
    # last record, reads the three again and stores nothing twice.
    rig.emulator.add_punch("4")
    await rig.restart()
    assert (rig.worker.tail_reads, rig.driver.reads) == (1, 0)
    assert rig.stored_ids() == rig.terminal_ids() and len(rig.stored_ids()) == 504


async def test_a_terminal_whose_tail_reads_fail_is_still_read(
    rig_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A READ_BUFFER from an offset answered with a short data packet (the driver cannot trust
    the set): the session fails, and the reconnect's poll reads whole instead of failing again."""
    real = dispatch.COMMAND_HANDLERS[zp.CMD_READ_BUFFER]

    def short_offsets(ctx: Any, session: Any, packet: zp.ZkPacket, link: Any) -> Any:
        if zp.decode_read_buffer(packet.data)[0] != 0:
            return ack(session.id, packet, b"\x00" * 3, code=zp.CMD_DATA)
        return real(ctx, session, packet, link)

    monkeypatch.setitem(dispatch.COMMAND_HANDLERS, zp.CMD_READ_BUFFER, short_offsets)
    rig: Rig = await rig_factory(records=500)  # a whole read is one READ_BUFFER from 0
    rig.emulator.add_punch("1")
    rig.worker.request_poll()
    await wait_until_async(lambda: rig.worker.full_reads >= 2, timeout=30, message="a whole read")
    assert rig.worker.tail_reads == 0 and rig.stored_ids() == rig.terminal_ids()


SIZES_ASKED = "(the terminal is asked its sizes)"


def pool_calls(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What the driver hands its thread pool from now on (each call's name), with a mark each
    time the emulated terminal is asked its free sizes (a round trip)."""
    session = rig.driver._session
    calls: list[str] = []
    real_run = session.run

    async def counted(what: str, call: Any, **options: Any) -> Any:
        calls.append(what)
        return await real_run(what, call, **options)

    monkeypatch.setattr(session, "run", counted)
    real = dispatch.COMMAND_HANDLERS[zp.CMD_GET_FREE_SIZES]

    def sizes(ctx: Any, session: Any, packet: zp.ZkPacket, link: Any) -> Any:
        calls.append(SIZES_ASKED)
        return real(ctx, session, packet, link)

    monkeypatch.setitem(dispatch.COMMAND_HANDLERS, zp.CMD_GET_FREE_SIZES, sizes)
    return calls


async def test_a_tail_poll_is_one_driver_call_with_the_contact(
    rig_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The contact and the tail read go to the pool as one call (`ZkDriver.info_then_tail`), and
    the tail reuses the contact's counts: the terminal is not asked its free sizes twice."""
    rig: Rig = await rig_factory(records=300)
    calls = pool_calls(rig, monkeypatch)
    rig.emulator.add_punch("1")
    rig.emulator.add_punch("2")
    await rig.poll()

    assert rig.worker.tail_reads == 1 and rig.stored_ids() == rig.terminal_ids()
    assert calls == ["info and new records", SIZES_ASKED]


async def test_a_poll_whose_count_is_explained_makes_no_tail_read_with_its_contact(rig_factory: Any) -> None:
    rig: Rig = await rig_factory(records=300)
    packets = rig.emulator.counters.packets
    await rig.poll()
    assert rig.worker.polls_counted == 1 and rig.worker.tail_reads == 0
    assert rig.emulator.counters.packets - packets == 4  # the contact alone


async def test_a_reconnect_checks_the_log_end_in_the_contacts_own_call(
    rig_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a reconnect whose count agrees, the read of the last record stored (is it still
    there?) goes with the contact, as a tail read does: one pool call, the sizes asked once."""
    rig: Rig = await rig_factory(records=300)
    calls = pool_calls(rig, monkeypatch)
    await rig.emulator.set_fault("restart", downtime=0.2)
    rig.worker.request_poll()  # the poll finds the session gone: the worker connects again
    await wait_until_async(
        lambda: rig.worker.polls_counted >= 1, timeout=30, message="a poll after reconnecting"
    )
    assert rig.driver.reads == rig.worker.full_reads == 1  # only the rig's first read
    connected = next(n for n, call in enumerate(calls) if call.startswith("connect"))
    assert calls[connected + 1 :] == ["info and new records", SIZES_ASKED], calls
