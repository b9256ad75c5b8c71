"""What a waiting worker keeps (issue 18: a gateway's memory is mostly its terminals'): the
worker's coroutines live as long as the worker, so whatever their frames hold between polls is
held once per terminal. A parsed device meta, the last contact's answer or the last tail read's
records kept there cost a 5,000-terminal gateway megabytes for nothing. Against the ZK emulator
over real TCP and a real buffer file."""

from __future__ import annotations

import asyncio
from typing import Any

from punchgate.drivers.base import DeviceInfo, TailOutcome
from punchgate.gateway.faults import FaultSet
from punchgate.gateway.worker import DeviceWorker
from punchgate.gateway.worker_failures import FailureLog
from tests.gateway.conftest import Rig
from tests.support.waiting import wait_until_async


def _waiting_locals(worker: DeviceWorker) -> list[object] | None:
    """Every local of the worker's coroutine chain while it waits for its next poll; None
    while it is anywhere else."""
    for task in asyncio.all_tasks():
        coro: Any = task.get_coro()
        frame = getattr(coro, "cr_frame", None)
        if frame is None or frame.f_locals.get("self") is not worker:
            continue
        held: list[object] = []
        waiting = False
        while frame is not None:
            waiting |= coro.cr_code.co_name == "_wait_for_poll"
            held.extend(value for name, value in frame.f_locals.items() if name != "self")
            coro = getattr(coro, "cr_await", None)
            frame = getattr(coro, "cr_frame", None)
        return held if waiting else None
    return None


async def test_a_worker_waiting_for_its_next_poll_holds_no_meta_contact_or_tail(rig_factory: Any) -> None:
    rig: Rig = await rig_factory(records=300)
    await rig.restart()  # the restarted worker starts from the device meta the buffer holds
    rig.emulator.add_punch("1")
    rig.emulator.add_punch("2")
    await rig.poll()
    assert rig.worker.tail_reads >= 1  # the poll read the two new records with its contact
    seen: list[list[object]] = []

    def waiting() -> bool:  # read in the check itself: the worker cannot move in between
        held = _waiting_locals(rig.worker)
        seen[:] = [] if held is None else [held]
        return held is not None

    await wait_until_async(waiting, timeout=20, message="the worker waiting for its next poll")
    kept = [type(value).__name__ for value in seen[0] if isinstance(value, dict | DeviceInfo | TailOutcome)]
    assert kept == [], f"the waiting worker's frames hold {kept}"


def test_fresh_fault_sets_and_failure_logs_share_one_empty_set() -> None:
    """One per terminal each: an empty set of their own would be 216 bytes a terminal."""
    first, second = FaultSet("a"), FaultSet("b")
    assert first._clear_wanted is second._clear_wanted
    first.hold, first.hold_seconds = frozenset({"protocol_error"}), 3600.0
    first.raise_fault("protocol_error", "2 min")
    assert not first.clear_fault("protocol_error")  # held: the clear waits for the hold to pass
    assert first._clear_wanted == {"protocol_error"} and second._clear_wanted == frozenset()
    first.raise_fault("protocol_error", "3 min")  # seen again: no clear is wanted any more
    assert first._clear_wanted is second._clear_wanted

    logs = FailureLog(), FailureLog()
    assert logs[0]._logged_faults is logs[1]._logged_faults
    logs[0].failed("unreachable", "timed out")
    assert logs[0]._logged_faults == {"unreachable"} and not logs[1]._logged_faults
    logs[0].succeeded()
    assert logs[0]._logged_faults is logs[1]._logged_faults
