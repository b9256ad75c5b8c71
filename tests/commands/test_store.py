"""The buffer's memory of remote commands (sync/command_store.py through the Store): an id is
stored once, answers are kept and resumed, secrets are masked once done, and punches.resend
requeues exactly one terminal's delivered punches of a local day or a time range."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from punchgate.sync.command_store import NewRequest
from punchgate.sync.settings import BufferSettings
from punchgate.sync.store import Store
from tests.support.factories import make_punches


def _store(tmp_path: Path) -> Store:
    settings = BufferSettings.model_validate({"path": str(tmp_path / "buffer.db"), "min_free_disk_mb": 0})
    return Store.open(settings, gateway_id="gw-test")


def _request(request_id: str, *targets: str) -> NewRequest:
    document = {
        "id": request_id,
        "command": "users.upsert",
        "args": {"users": [{"user_id": "1", "password": "1234"}]},
    }
    return NewRequest(
        id=request_id,
        command="users.upsert",
        requester="hr",
        request=document,
        reply_topic="punchgate/gw-test/commands/response",
        correlation=b"\x01corr",
        received_at=1000.0,
        expires_at=2000.0,
        targets=targets,
    )


def test_an_id_is_stored_once_and_its_answers_are_kept(tmp_path: Path) -> None:
    store = _store(tmp_path)
    try:
        assert store.command_accept(_request("r1", "a", "b"), {"id": "r1"}) is None
        again = store.command_accept(_request("r1", "c"), {"id": "r1"})
        assert again is not None and set(again.targets) == {"a", "b"} and again.correlation == b"\x01corr"
        store.command_status("r1", "a", "running")
        masked = {"id": "r1", "args": {"users": [{"user_id": "1", "password": "***"}]}}
        assert store.command_finish("r1", "a", "ok", '{"status":"ok"}', {"id": "r1"}, masked_request=masked)
        assert not store.command_finish(
            "r1", "a", "error", "{}", {"id": "r1"}, masked_request=masked
        )  # first stands
        open_ = store.command_open()
        assert [r.id for r in open_] == ["r1"] and open_[0].targets["a"].response == '{"status":"ok"}'
        assert open_[0].request["args"]["users"][0]["password"] == "1234"  # still needed to run b
        store.command_finish(
            "r1", "b", "expired", '{"status":"expired"}', {"id": "r1"}, masked_request=masked
        )
        done = store.command_get("r1")
        assert done is not None and done.done_at is not None
        assert done.request["args"]["users"][0]["password"] == "***"
        assert [r.id for r in store.command_open()] == ["r1"]  # answers not acknowledged yet
        store.command_published([("r1", "a"), ("r1", "b")])
        assert store.command_open() == []
        kinds = [
            e for e in (store.last_audit_entry("command_accepted"), store.last_audit_entry("command_done"))
        ]
        assert all(kinds)
        assert store.command_purge(0) == 1 and store.command_get("r1") is None
    finally:
        store.close()


def test_requeue_range_resends_one_terminal_s_delivered_punches_of_a_day(tmp_path: Path) -> None:
    store = _store(tmp_path)
    try:
        punches = make_punches("door-1", 50) + make_punches("door-2", 10)
        store.add_punches(punches)
        store.mark_delivered([row.pk for row in store.pending_batch(1000)])
        assert store.pending_count() == 0
        day = punches[0].local_time.date()
        far = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
        changed = store.requeue_range(
            "door-1",
            utc_from=far,
            utc_to=far + dt.timedelta(days=20000),
            local_day=day,
            note={"command_id": "x"},
        )
        assert changed == 50 and store.pending_count() == 50 and store.pending_devices() == {"door-1": 50}
        assert store.last_audit_entry("replay") is not None
        first = punches[10].utc_time
        store.mark_delivered([row.pk for row in store.pending_batch(1000)])
        assert store.requeue_range("door-1", utc_from=first, utc_to=first + dt.timedelta(seconds=5)) == 5
        assert json.loads(json.dumps(store.last_audit_entry("replay")))["requeued"] == 5
    finally:
        store.close()
