"""Make-up punch rules against a real buffer file: who may decide, what collides, the limits,
and the record an approved entry becomes (id recipe, contract, schemas)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from punchgate.sync import contract
from punchgate.sync.audit_verify import verify
from punchgate.sync.manual import ManualRefused
from punchgate.sync.store import Store
from tests.manual.helpers import SERIAL, decide, enter, open_store, settings
from tests.support.factories import make_punch
from tests.support.schemas import validator
from tests.sync.test_security_and_contract import strict_validator


def _stream(store: Store) -> list[dict[str, Any]]:
    rows = store.pending_batch(100)
    return [json.loads(row.payload) for row in rows]


def test_entered_then_approved_by_someone_else_becomes_a_manual_punch(tmp_path: Path) -> None:
    config = settings(tmp_path)
    store = open_store(config)
    try:
        entry = enter(store, config)
        assert entry.status == "pending" and entry.serial == SERIAL
        assert entry.utc_time == "2026-03-09T07:00:00+00:00"  # Berlin is UTC+1 in March
        assert _stream(store) == []  # nothing enters the stream before approval

        with pytest.raises(ManualRefused, match="a different person") as same:
            decide(store, config, entry.entry_id, by=" alice ")
        assert same.value.status == 403
        approved = decide(store, config, entry.entry_id, by="Bob")
        assert approved.status == "approved" and approved.decided_by == "Bob"
        with pytest.raises(ManualRefused, match="already approved"):
            decide(store, config, entry.entry_id, by="Carol", approve=False)

        (record,) = _stream(store)
        assert record["source"] == "manual" and record["historical"] is True
        assert record["user_id"] == "1017" and record["local_time"] == "2026-03-09T08:00:00"
        assert record["state"] == {"code": 0, "name": "check_in"}
        assert record["verify"] == {"code": -1, "name": None}
        manual = record["manual"]
        assert manual["reason_code"] == "forgot_to_punch" and manual["reason"] == "badge left at home"
        assert manual["entered_by"] == "Alice" and manual["approved_by"] == "Bob"
        assert manual["entry_id"] == entry.entry_id
        # The id recipe of docs/mqtt-contract.md, recomputed from the record's own fields.
        text = "\x1f".join(
            [
                "1",
                f"manual:{record['serial']}",
                record["user_id"],
                record["local_time"],
                "0",
                "-1",
                manual["entry_id"],
            ]
        )
        assert record["id"] == hashlib.sha256(text.encode()).hexdigest()[:32] == approved.punch_id
        for name in ("punch-record",):
            strict_validator(name).validate(record)
            validator(name).validate(record)
        batch = json.loads(
            contract.batch_json(gateway="gw-test", device="door-1", seq=1, records=[json.dumps(record)])
        )
        strict_validator("punch-batch").validate(batch)
        validator("punch-batch").validate(batch)
        assert verify(config.buffer.path).ok
    finally:
        store.close()


def test_the_strict_schema_wants_manual_exactly_with_source_manual() -> None:
    record = json.loads(contract.record_json(make_punch("a", 1)))
    strict_validator("punch-record").validate(record)
    with_manual = {**record, "manual": {"entry_id": "x", "reason_code": "other", "reason": "r", "entered_by": "A",
                                        "entered_at": "2026-03-09T08:00:00Z", "approved_by": "B",
                                        "approved_at": "2026-03-09T09:00:00Z"}}  # fmt: skip
    with pytest.raises(Exception, match=r"should not be valid|is not valid"):
        strict_validator("punch-record").validate(with_manual)  # a terminal punch has no manual object
    validator("punch-record").validate(with_manual)  # consumers accept fields they do not know
    with pytest.raises(Exception, match="required"):
        strict_validator("punch-record").validate({**record, "source": "manual"})  # manual without details


def test_a_punch_the_terminal_holds_refuses_the_make_up_punch(tmp_path: Path) -> None:
    config = settings(tmp_path, conflict_minutes=1)
    store = open_store(config)
    try:
        held = make_punch("door-1", 0)  # user 1000, 2024-03-04 07:00:00 local, 06:00 UTC
        store.add_punches([held])
        then = dt.datetime(2024, 3, 5, tzinfo=dt.UTC)
        for minute in ("06:59:30", "07:00:45", "07:01:59"):  # Berlin local: 06:00 UTC is 07:00
            with pytest.raises(ManualRefused, match=r"already holds a punch of user '1000'") as refused:
                enter(store, config, now=then, user_id="1000", local_time=f"2024-03-04T{minute}")
            assert refused.value.status == 409 and held.id in str(refused.value)
        assert (
            enter(store, config, now=then, user_id="1000", local_time="2024-03-04T07:02:00").status
            == "pending"
        )
        assert (
            enter(store, config, now=then, user_id="1001", local_time="2024-03-04T07:00:00").status
            == "pending"
        )
        # A second entry for the same minute collides with the pending one.
        with pytest.raises(ManualRefused, match="already has a pending make-up punch"):
            enter(
                store, config, now=then, user_id="1001", local_time="2024-03-04T07:00:30", entered_by="Carol"
            )
    finally:
        store.close()


def test_a_punch_that_arrives_before_approval_refuses_the_approval(tmp_path: Path) -> None:
    config = settings(tmp_path)
    store = open_store(config)
    try:
        entry = enter(
            store,
            config,
            now=dt.datetime(2024, 3, 5, tzinfo=dt.UTC),
            user_id="1000",
            local_time="2024-03-04T07:00:20",
        )
        store.add_punches([make_punch("door-1", 0)])  # the terminal delivers the "missing" punch
        with pytest.raises(ManualRefused, match="cannot approve"):
            decide(store, config, entry.entry_id)
        assert store.get_manual(entry.entry_id).status == "pending"  # type: ignore[union-attr]
        assert decide(store, config, entry.entry_id, approve=False).status == "rejected"
        assert [r["source"] for r in _stream(store)] == ["poll"]  # a rejected entry is never sent
    finally:
        store.close()


def test_limits_days_back_future_reasons_and_terminals(tmp_path: Path) -> None:
    config = settings(tmp_path, max_per_user_per_month=2, max_days_back=7, virtual_terminal="site")
    store = open_store(config)
    try:
        enter(store, config, local_time="2026-03-09T08:00")
        rejected = enter(store, config, local_time="2026-03-09T17:00", state="check_out")
        decide(store, config, rejected.entry_id, approve=False)  # rejected ones do not count
        enter(store, config, local_time="2026-03-08T08:00")
        with pytest.raises(
            ManualRefused, match=r"already has 2 make-up punches in 2026-03 .*max_per_user_per_month = 2"
        ):
            enter(store, config, local_time="2026-03-07T08:00")
        cases: dict[str, dict[str, Any]] = {
            "more than 7 days back": {"local_time": "2026-03-02T08:00"},
            "in the future": {"local_time": "2026-03-10T14:00"},
            "is not one of forgot_to_punch": {"reason_code": "lunch"},
            "no terminal named 'door-9'": {"device": "door-9"},
            "state must be one of": {"state": "nap"},
            "without an offset": {"local_time": "2026-03-09T08:00:00+01:00"},
            "entered_by is required": {"entered_by": " "},
            "unknown key 'extra'": {"extra": 1},
        }
        for message, change in cases.items():
            with pytest.raises(ManualRefused, match=message):
                enter(store, config, user_id="2000", **change)
        virtual = enter(store, config, device="site", user_id="2000", reason_code="working_off_site")
        assert virtual.serial == "virtual:site" and virtual.device == "site"
    finally:
        store.close()


def test_without_approval_required_it_is_sent_at_once(tmp_path: Path) -> None:
    config = settings(tmp_path, approval_required=False)
    store = open_store(config)
    try:
        entry = enter(store, config)
        assert entry.status == "approved" and entry.decided_by is None and entry.punch_id
        (record,) = _stream(store)
        assert record["manual"]["approved_by"] is None
        strict_validator("punch-record").validate(record)
        assert store.pending_count() == 1
    finally:
        store.close()
