"""Polls cost what is new, and never at the price of a punch.

A device worker against the ZK emulator over real loopback TCP, with a real buffer file. The
terminal's record count, and what the live stream delivered, decide whether a poll reads the
log at all; a read normalises only the records after the part the previous read stored; the
buffer is written only when something changed. The guarantee stays: a count that does not add
up reads in full (after a reconnect or a restart too), and a log cleared and refilled to the
same count is read within `reconcile_polls` polls, across a restart of the gateway as well.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import time
from functools import partial
from typing import Any

from sqlalchemy import event

from tests.gateway.conftest import Rig, stored_at_least
from tests.support.waiting import wait_until_async
from tests.support.zk import listening_for_punches


async def test_a_poll_with_nothing_new_reads_nothing_and_writes_nothing(rig_factory: Any) -> None:
    rig: Rig = await rig_factory(records=500)
    assert rig.stored_ids() == rig.terminal_ids()
    reads, writes, commits = rig.driver.reads, rig.store.meta_writes, rig.store.commits
    rig.normalised[0] = 0
    for _ in range(5):
        await rig.poll()
    assert rig.worker.polls_counted == 5
    assert rig.driver.reads == reads, "a poll with the same count read the log"
    assert (rig.store.meta_writes, rig.store.commits) == (writes, commits), "a poll with nothing new wrote"
    assert rig.normalised[0] == 0


async def test_new_records_are_read_and_only_they_are_normalised(rig_factory: Any) -> None:
    rig: Rig = await rig_factory(records=500)
    rig.normalised[0] = 0
    for user in ("1", "2", "3"):
        rig.emulator.add_punch(user, state=1)
    await rig.poll()
    # Read from the last stored record on (tests/gateway/test_tail_read.py), not whole.
    assert (rig.worker.full_reads, rig.worker.tail_reads, rig.driver.reads) == (1, 1, 1)
    assert rig.normalised[0] == 3, "records stored by the previous read were normalised again"
    assert rig.stored_ids() == rig.terminal_ids()


async def test_live_punches_make_the_count_add_up(rig_factory: Any) -> None:
    rig: Rig = await rig_factory(records=200, live=True)
    # The stream is open once the worker listens; punches arrive without a poll.
    await wait_until_async(lambda: listening_for_punches(rig.emulator), timeout=10)
    for n, user in enumerate(("4", "5"), start=len(rig.stored_ids()) + 1):
        rig.emulator.add_punch(user)
        await wait_until_async(partial(stored_at_least, rig, n), timeout=10, message="a live punch")
    reads = rig.driver.reads
    await rig.poll()
    assert rig.worker.polls_counted == 1 and rig.driver.reads == reads
    assert rig.stored_ids() == rig.terminal_ids()


async def test_a_count_that_does_not_add_up_reads_in_full(rig_factory: Any) -> None:
    rig: Rig = await rig_factory(records=300)
    await rig.emulator.set_fault("log_cleared")  # fewer records than the gateway read
    rig.emulator.add_punch("6")
    await rig.poll()
    assert rig.worker.full_reads == 2 and rig.worker.polls_counted == 0
    assert rig.terminal_ids() <= rig.stored_ids()
    assert "log_reset" in rig.worker.health.faults.active


async def test_a_log_cleared_and_refilled_to_the_same_count_is_read_within_the_bound(
    rig_factory: Any,
) -> None:
    rig: Rig = await rig_factory(records=40, reconcile_polls=3)
    await rig.emulator.set_fault("log_cleared")
    start = rig.emulator.now() - dt.timedelta(hours=2)
    for n in range(40):  # the same count: 40
        rig.emulator.add_punch(str(1 + n % 20), start + dt.timedelta(minutes=n), state=n % 2)
    new = rig.terminal_ids() - rig.stored_ids()
    assert len(new) == 40
    await rig.poll()
    await rig.poll()  # the count agrees: these two polls cannot see the new log
    assert rig.worker.polls_counted == 2
    await rig.poll()  # the third poll since the last full read reads in full, whatever the count
    assert rig.worker.full_reads == 2
    assert new <= rig.stored_ids(), "records of a refilled log were never stored"
    # The read found the log was not the one it had stored: every record was checked.
    assert rig.normalised[0] == 80


async def test_a_reconnect_reads_when_the_count_changed(rig_factory: Any) -> None:
    rig: Rig = await rig_factory(records=100)
    await rig.emulator.set_fault("restart", downtime=0.2)
    rig.worker.request_poll()  # the poll finds the session gone: the worker connects again
    await wait_until_async(
        lambda: rig.worker.polls_counted >= 1, timeout=30, message="a poll after reconnecting"
    )
    assert rig.driver.reads == 1 and rig.worker.full_reads == 1, "the same count was read again"
    rig.emulator.add_punch("8")
    await rig.emulator.set_fault("restart", downtime=0.2)
    rig.worker.request_poll()
    await wait_until_async(
        lambda: rig.worker.full_reads + rig.worker.tail_reads >= 2,
        timeout=30,
        message="a read after reconnecting",
    )
    # The log grew: the read took what it had not stored and normalised the new record only.
    assert rig.normalised[0] == 101
    assert rig.stored_ids() == rig.terminal_ids()


async def test_a_restarted_gateway_answers_by_the_count_what_it_stored_before(rig_factory: Any) -> None:
    rig: Rig = await rig_factory(records=300)
    await rig.restart()
    assert (rig.worker.polls_counted, rig.driver.reads) == (1, 0), "the restart read the log again"
    assert rig.worker.health.last_punch_at is not None, "when the terminal was last used was forgotten"
    rig.emulator.add_punch("9")  # punched while it runs again: read, only the new record normalised
    await rig.poll()  # a tail read, from the known log kept in the buffer
    assert (rig.worker.tail_reads, rig.driver.reads) == (1, 0) and rig.normalised[0] == 301
    assert rig.stored_ids() == rig.terminal_ids()


async def test_a_log_refilled_while_the_gateway_was_down_is_read_at_the_restart(rig_factory: Any) -> None:
    """The count agrees, but the log is not the one stored: the restart's reconcile reads it."""
    rig: Rig = await rig_factory(records=40, reconcile_polls=3)
    await rig.emulator.set_fault("log_cleared")
    start = rig.emulator.now() - dt.timedelta(hours=2)
    for n in range(40):  # the same count: the restarted gateway's count cannot see it
        rig.emulator.add_punch(str(1 + n % 20), start + dt.timedelta(minutes=n), state=n % 2)
    new = rig.terminal_ids() - rig.stored_ids()
    assert len(new) == 40
    await rig.restart()
    assert (rig.worker.polls_counted, rig.driver.reads) == (0, 1), "the refilled log was trusted by its count"
    assert new <= rig.stored_ids()
    # The log as it is now is what the buffer holds: the next restart answers by the count.
    await rig.restart()
    assert (rig.worker.polls_counted, rig.driver.reads) == (1, 0)


async def test_a_log_refilled_while_the_connection_was_down_is_read_at_the_reconnect(
    rig_factory: Any,
) -> None:
    rig: Rig = await rig_factory(records=40, reconcile_polls=100)
    await rig.emulator.set_fault("log_cleared")
    start = rig.emulator.now() - dt.timedelta(hours=2)
    for n in range(40):  # the same count, and the periodic whole read far off
        rig.emulator.add_punch(str(1 + n % 20), start + dt.timedelta(minutes=n), state=n % 2)
    new = rig.terminal_ids() - rig.stored_ids()
    await rig.emulator.set_fault("restart", downtime=0.2)
    rig.worker.request_poll()  # the poll finds the session gone: the worker connects again
    await wait_until_async(
        lambda: rig.worker.full_reads >= 2, timeout=30, message="a read after reconnecting"
    )
    assert new <= rig.stored_ids(), "a refilled log was trusted by its count after a reconnect"


async def test_a_read_checks_known_ids_through_the_unique_index_of_its_insert(rig_factory: Any) -> None:
    """The known-id check costs no query of its own: the new records go to one
    `INSERT ... ON CONFLICT (id) DO NOTHING`, whose unique index skips what the file holds."""
    rig: Rig = await rig_factory(records=100)
    statements: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if re.search(r"\bpunches\b", statement):
            statements.append(" ".join(statement.split()))

    event.listen(rig.store._engine, "before_cursor_execute", note)
    try:
        rig.emulator.add_punch("7")
        await rig.poll()
    finally:
        event.remove(rig.store._engine, "before_cursor_execute", note)
    inserts = [s for s in statements if s.upper().startswith("INSERT INTO PUNCHES")]
    assert len(inserts) == 1 and "ON CONFLICT (id) DO NOTHING" in inserts[0], statements
    assert not [s for s in statements if s.upper().startswith("SELECT")], statements


async def test_polls_fall_due_on_the_grid_and_lag_counts_from_the_due_time(rig_factory: Any) -> None:
    began = time.monotonic()
    rig: Rig = await rig_factory(records=20, poll_interval=1, first_poll_in=0.4, phase=0.1)
    assert time.monotonic() - began >= 0.4, "the first contact did not wait for its turn"
    await wait_until_async(lambda: rig.worker.polls_counted >= 2, timeout=20)
    # Hold the event loop across a due time: the poll is served late, and its lag says so.
    lags = len(rig.worker.poll_lags)
    time.sleep(1.6)  # noqa: ASYNC251 - blocks the loop on purpose: the timer cannot fire
    await wait_until_async(lambda: len(rig.worker.poll_lags) > lags, timeout=20)
    late = rig.worker.poll_lags[lags]
    assert late >= 0.5, f"lag {late:.3f} s: measured from when the timer ran, not from the due time"
    # The polls missed while the loop was held are one poll, not a burst.
    await asyncio.sleep(0.3)
    assert len(rig.worker.poll_lags) <= lags + 2
