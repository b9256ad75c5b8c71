"""The one roster refresher of a fleet (gateway/roster.py `RosterRefresher`): each terminal's read
is queued on its worker when due, again `refresh_hours` after it ran, sooner after a failure,
never again once its driver cannot list users, and one at a time per terminal. Pure scheduling:
the workers here only record what is queued and answer it as told."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from punchgate.drivers.base import CommandUnsupportedError
from punchgate.gateway.roster import RosterJob, RosterRefresher, RosterSettings
from tests.support.waiting import wait_until_async

EVERY_HOURS = 0.0002  # 0.72 s


class ScriptedWorker:
    """Answers its queued roster jobs in turn with `answers` (a count or an exception)."""

    def __init__(self, name: str, answers: list[int | Exception]) -> None:
        self.name = name
        self.stored_roster: dict[str, Any] | None = {}  # none stored: due at once
        self.answers = answers
        self.queued: list[RosterJob] = []

    def submit(self, job: RosterJob) -> None:
        assert all(j.done.done() for j in self.queued), "a second read queued before the first ran"
        self.queued.append(job)
        answer = self.answers.pop(0) if self.answers else 1
        if isinstance(answer, Exception):
            job.done.set_exception(answer)
        else:
            job.done.set_result(answer)


async def _run_until(refresher: RosterRefresher, workers: list[Any], done: Callable[[], bool]) -> None:
    task = asyncio.ensure_future(refresher.run(workers))
    try:
        await wait_until_async(done, timeout=30, message="the refreshes")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_each_terminal_is_read_again_after_its_interval_and_after_a_failure() -> None:
    refresher = RosterRefresher(store=None, settings=RosterSettings(refresh_hours=EVERY_HOURS))  # type: ignore[arg-type]
    failing = ScriptedWorker("door-1", [RuntimeError("went away"), 3, 3])
    steady = ScriptedWorker("door-2", [5, 5, 5])
    await _run_until(
        refresher, [failing, steady], lambda: len(failing.queued) >= 3 and len(steady.queued) >= 3
    )
    assert all(job.done.done() for job in failing.queued + steady.queued)


async def test_a_terminal_that_cannot_list_users_drops_out_and_the_others_go_on() -> None:
    refresher = RosterRefresher(store=None, settings=RosterSettings(refresh_hours=EVERY_HOURS))  # type: ignore[arg-type]
    cannot = ScriptedWorker("anviz-1", [CommandUnsupportedError("no user list")])
    other = ScriptedWorker("door-1", [])
    await _run_until(refresher, [cannot, other], lambda: len(other.queued) >= 3)
    assert len(cannot.queued) == 1


async def test_a_roster_stored_recently_waits_until_it_is_due() -> None:
    refresher = RosterRefresher(store=None, settings=RosterSettings(refresh_hours=24))  # type: ignore[arg-type]
    fresh = ScriptedWorker("door-1", [])
    fresh.stored_roster = {"refreshed_at": "2999-01-01T00:00:00Z"}  # a day's wait, at most
    stale = ScriptedWorker("door-2", [])
    await _run_until(refresher, [fresh, stale], lambda: len(stale.queued) == 1)
    assert fresh.queued == []
