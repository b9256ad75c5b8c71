"""A make-up punch end to end: `punchgate punch add` and `approve` against the running daemon,
the subscriber receives it with its reason, the audit head is retained on the broker, `audit
verify --from-broker` proves the chain and `export` shows the punch, all while the daemon runs."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.pipeline.conftest import emulators  # noqa: F401  (the fixture)
from tests.support.broker import free_port
from tests.support.config import zk_terminal
from tests.support.gateway import REPO, GatewayProcess
from tests.support.schemas import validator
from tests.support.subscriber import Subscriber
from tests.support.waiting import wait_until_async
from tests.support.zk import expected_ids
from tests.sync.test_security_and_contract import strict_validator


def punchgate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "punchgate.gateway", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )


async def test_add_approve_and_receive_a_make_up_punch(
    emulators: Callable[..., Any],  # noqa: F811
    gateway_factory: Callable[..., GatewayProcess],
    subscriber: Subscriber,
    tmp_path: Path,
) -> None:
    (terminal,) = await emulators(1, records=5)
    gateway = gateway_factory(
        [zk_terminal("door-1", terminal, live=False, poll_interval=30)],
        http_port=free_port(),
        sections={"manual": {"max_per_user_per_month": 5}, "audit": {"publish_interval_seconds": 10}},
    )
    gateway.start()
    assert not await subscriber.missing_after(set(expected_ids(terminal)), timeout=30)
    config = str(gateway.config_path)
    when = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).replace(hour=8, minute=0, second=0, microsecond=0)

    added = await asyncio.to_thread(
        punchgate, "punch", "add", "--config", config, "--device", "door-1", "--user", "9001",
        "--time", when.strftime("%Y-%m-%dT%H:%M"), "--state", "check_in", "--reason-code", "recognition_failed",
        "--reason", "人脸识别失败 (face not recognised)", "--by", "Alice",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    entry_id = re.search(r"punch approve (\S+) --by", added.stdout)[1]  # type: ignore[index]
    listed = await asyncio.to_thread(punchgate, "punch", "list", "--config", config, "--status", "pending")
    assert entry_id in listed.stdout and "recognition_failed" in listed.stdout

    same = await asyncio.to_thread(
        punchgate, "punch", "approve", entry_id, "--config", config, "--by", "alice"
    )
    assert same.returncode == 1 and "a different person must approve" in same.stderr
    approved = await asyncio.to_thread(
        punchgate, "punch", "approve", entry_id, "--config", config, "--by", "Bob"
    )
    assert approved.returncode == 0, approved.stderr

    def manual_batches() -> list[dict[str, Any]]:
        return [
            m.json() for m in subscriber.on("/devices/door-1/punches") if '"manual"' in m.payload.decode()
        ]

    await wait_until_async(
        lambda: manual_batches(), timeout=20, message="the make-up punch at the subscriber"
    )
    (batch,) = manual_batches()
    strict_validator("punch-batch").validate(batch)
    validator("punch-batch").validate(batch)
    (record,) = batch["records"]
    assert record["source"] == "manual" and record["user_id"] == "9001"
    assert record["serial"] == terminal.serial_number
    assert record["manual"]["reason"] == "人脸识别失败 (face not recognised)"
    assert record["manual"]["reason_code"] == "recognition_failed"
    assert (record["manual"]["entered_by"], record["manual"]["approved_by"]) == ("Alice", "Bob")

    # The audit head went out retained after the approval (an administrative action).
    def heads() -> list[dict[str, Any]]:
        return [m.json() for m in subscriber.on("/audit")]

    await wait_until_async(
        lambda: any(h["kind"] == "manual_approved" for h in heads()), timeout=20, message="the audit head"
    )
    for head in heads():
        strict_validator("audit-head").validate(head)
        validator("audit-head").validate(head)
    rejected_twice = await asyncio.to_thread(
        punchgate, "punch", "reject", entry_id, "--config", config, "--by", "Carol", "--note", "late"
    )
    assert rejected_twice.returncode == 1 and "already approved" in rejected_twice.stderr

    checked = await asyncio.to_thread(punchgate, "audit", "verify", "--config", config, "--from-broker")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "OK" in checked.stdout and "matches" in checked.stdout

    out = tmp_path / "march.csv"
    day = when.date().isoformat()
    exported = await asyncio.to_thread(
        punchgate,
        "export",
        "--config",
        config,
        "--from",
        day,
        "--to",
        day,
        "--user",
        "9001",
        "--out",
        str(out),
    )
    assert exported.returncode == 0, exported.stderr
    text = out.read_bytes().decode("utf-8")
    assert text.startswith("\ufeff")
    (row,) = list(csv.DictReader(io.StringIO(text[1:])))
    assert row["source"] == "manual" and row["manual_reason"] == "人脸识别失败 (face not recognised)"
    assert row["manual_approved_by"] == "Bob" and row["record_id"] == record["id"]
