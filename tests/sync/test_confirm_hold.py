"""How long a PUBACKed row waits for its confirmation before it is written as sent
(`confirmations_memory.HeldAcks`): SENT_MARK_GRACE, and up to SENT_MARK_MAX_HOLD while a consumer
keeps confirming, so that one lagging behind a backlog does not have each row written twice.
The clock is passed in: each case names the moments it checks."""

from __future__ import annotations

import pytest

from punchgate.sync import confirmations_memory
from punchgate.sync.confirmations_memory import SENT_MARK_GRACE, SENT_MARK_MAX_HOLD, HeldAcks


def test_without_confirmations_a_row_waits_the_grace() -> None:
    held = HeldAcks()
    held.hold([1, 2, 3], 100.0)
    assert held.next_due() == 100.0 + SENT_MARK_GRACE
    assert held.due(100.0 + SENT_MARK_GRACE * 0.9) == []
    assert held.due(100.0 + SENT_MARK_GRACE) == [1, 2, 3]
    assert held.next_due() is None


def test_while_confirmations_keep_coming_rows_wait_longer_but_not_forever() -> None:
    held = HeldAcks()
    held.hold([1, 2], 100.0)
    held.hold([3, 4], 100.5)
    # Others' confirmations keep arriving: 1 and 2 are not due when their grace ends.
    now = 100.0
    while now < 100.0 + SENT_MARK_MAX_HOLD - 0.5:
        now += SENT_MARK_GRACE / 2
        held.confirmed([1000 + int(now * 10)], now)
        assert held.due(now) == [], now
    # The longest wait is over: the rows held that long are marked, the younger ones wait on.
    now = 100.0 + SENT_MARK_MAX_HOLD
    held.confirmed([4], now)  # 4's confirmation came: it needs no "sent" mark
    assert held.next_due() == 100.0 + SENT_MARK_MAX_HOLD
    assert held.due(now) == [1, 2]
    assert held.due(100.5 + SENT_MARK_MAX_HOLD - 0.1) == []


def test_when_confirmations_stop_held_rows_are_due_one_grace_after_the_last() -> None:
    held = HeldAcks()
    held.hold([1], 100.0)
    held.confirmed([7], 100.8)  # the consumer's last confirmation
    assert held.next_due() == pytest.approx(100.8 + SENT_MARK_GRACE)
    assert held.due(100.8 + SENT_MARK_GRACE * 0.9) == []
    assert held.due(100.8 + SENT_MARK_GRACE) == [1]


def test_a_confirmation_that_names_nothing_does_not_extend_the_wait() -> None:
    held = HeldAcks()
    held.hold([1], 100.0)
    held.confirmed([], 100.5)  # only unknown ids, or a malformed batch: nothing delivered
    assert held.due(100.0 + SENT_MARK_GRACE) == [1]


def test_beyond_the_memory_bound_rows_are_due_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(confirmations_memory, "SENT_MARK_MAX_ROWS", 3)
    held = HeldAcks()
    held.confirmed([9], 100.0)
    held.hold([1, 2], 100.0)
    assert not held.over_bound() and held.due(100.1) == []
    held.hold([3, 4], 100.1)
    assert held.over_bound()
    assert held.due(100.1) == [1, 2]  # back within the bound: the rest waits
    assert not held.over_bound()
