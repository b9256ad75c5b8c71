"""The push-command vocabulary and wire format (drivers/zk_push/commands.py), checked against
what the push emulator parses and runs (drivers/zk_push/emulator): every text the gateway can
send is one the emulator understands, with the effect intended."""

from __future__ import annotations

import datetime as dt

import pytest

from punchgate.drivers.zk_push import commands
from punchgate.drivers.zk_push.emulator import ZkPushEmulator
from punchgate.drivers.zk_push.emulator import commands as emulated
from punchgate.drivers.zk_push.emulator.wire import parse_commands, parse_device_time


def test_packed_time_is_zk_s_calendar() -> None:
    # The worked example of the vendor's description: 2018-02-22 14:54:54.
    assert commands.pack_time(dt.datetime(2018, 2, 22, 14, 54, 54)) == 583080894
    assert commands.unpack_time(583080894) == dt.datetime(2018, 2, 22, 14, 54, 54)
    when = dt.datetime(2026, 12, 31, 23, 59, 59)
    assert parse_device_time(str(commands.pack_time(when))) == when  # the emulator reads it back
    with pytest.raises(commands.CommandTextError):
        commands.pack_time(dt.datetime(1999, 12, 31))


@pytest.mark.parametrize(
    ("text", "kind", "canonical"),
    [
        ("INFO", "info", "INFO"),
        (" check ", "check", "CHECK"),
        ("REBOOT", "reboot", "REBOOT"),
        ("SET OPTIONS DateTime=2018-02-22 14:54:54", "set_time", "SET OPTIONS DateTime=583080894"),
        ("SET OPTION DateTime=583080894", "set_time", "SET OPTIONS DateTime=583080894"),
        ("set options datetime=NOW", "set_time", "SET OPTIONS DateTime=now"),
        (
            "DATA UPDATE USERINFO PIN=7\tName=Li Wei\tPri=0\tPasswd=\tCard=\tGrp=1\tTZ=",
            "user_update",
            "DATA UPDATE USERINFO PIN=7\tName=Li Wei\tPri=0\tPasswd=\tCard=\tGrp=1\tTZ=",
        ),
        ("data update userinfo name=Ann\tpin=8", "user_update", "DATA UPDATE USERINFO PIN=8\tName=Ann"),
        ("DATA DELETE USERINFO PIN=7", "user_delete", "DATA DELETE USERINFO PIN=7"),
        ("clear  log", "clear_log", "CLEAR LOG"),  # parsed; the queue takes it only from log.clear
    ],
)
def test_parse_gives_the_canonical_text(text: str, kind: str, canonical: str) -> None:
    parsed = commands.parse(text)
    assert (parsed.kind, parsed.text) == (kind, canonical)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty"),
        ("CLEAR DATA", "not a command this gateway sends"),
        ("INFO\nREBOOT", "line break"),
        ("SET OPTIONS Delay=5", "DateTime"),
        ("SET OPTIONS DateTime=yesterday", "not a time"),
        ("SET OPTIONS DateTime=2026-02-30 08:00:00", "not a valid date"),
        ("DATA UPDATE USERINFO Name=Ann", "needs PIN"),
        ("DATA UPDATE USERINFO PIN=7\tFP=abc", "does not take FP="),
        ("DATA UPDATE USERINFO PIN=7\tPasswd=abc", "up to 8 digits"),
        ("DATA UPDATE USERINFO PIN=7\tPri=admin", "not a privilege"),
        ("DATA UPDATE USERINFO PIN=7\tName=a\x01b", "control character"),
        ("DATA UPDATE USERINFO PIN=7 8", "not a user id"),
        ("DATA DELETE USERINFO PIN=7\tName=x", "PIN=… only"),
        ("DATA QUERY ATTLOG StartTime=2026-01-01 00:00:00", "not a command this gateway sends"),
    ],
)
def test_parse_refuses_what_is_outside_the_vocabulary(text: str, problem: str) -> None:
    with pytest.raises(commands.CommandTextError, match=problem):
        commands.parse(text)


def test_builders_round_trip_through_parse_and_fields_left_out_are_not_sent() -> None:
    texts = [
        commands.info(),
        commands.check(),
        commands.reboot(),
        commands.set_time(),
        commands.set_time(dt.datetime(2026, 3, 2, 8, 0)),
        commands.update_user(
            "7", name="李伟", privilege=commands.PRIVILEGES["admin"], card=123, password="1234"
        ),
        commands.update_user("7"),
        commands.delete_user("7"),
    ]
    for text in texts:
        assert commands.parse(text).text == text
    assert commands.update_user("7", name="Ann") == "DATA UPDATE USERINFO PIN=7\tName=Ann"


def test_secrets_are_masked_for_logs_and_listings() -> None:
    text = commands.update_user("7", name="Ann", password="1234", card=99)
    assert commands.redact(text) == "DATA UPDATE USERINFO PIN=7\tName=Ann\tPasswd=***\tCard=***"
    assert (
        commands.redact("DATA UPDATE USERINFO PIN=7\tPasswd=\tCard=")
        == "DATA UPDATE USERINFO PIN=7\tPasswd=\tCard="
    )
    assert commands.redact("INFO") == "INFO"


def test_now_is_rendered_when_sent() -> None:
    local = dt.datetime(2026, 3, 2, 8, 0, 5, 999)
    assert (
        commands.render(commands.set_time(), local)
        == f"SET OPTIONS DateTime={commands.pack_time(local.replace(microsecond=0))}"
    )
    assert commands.render("INFO", local) == "INFO"


def test_answer_lines_are_what_the_emulator_reads() -> None:
    lines = [
        commands.command_line(12, commands.update_user("7", name="Li Wei")),
        commands.command_line(13, "REBOOT"),
    ]
    body = commands.answer_body(lines, "gb18030")
    parsed = parse_commands(body.decode("gb18030"))
    assert [(c.id, c.text) for c in parsed] == [
        ("12", "DATA UPDATE USERINFO PIN=7\tName=Li Wei"),
        ("13", "REBOOT"),
    ]
    assert commands.answer_body([], "utf-8") == b"OK"


async def test_the_emulator_runs_every_command_of_the_vocabulary() -> None:
    """Run each text through the emulator's own command interpreter (no sockets)."""
    terminal = ZkPushEmulator("http://127.0.0.1:1", "SN1", users=0, timezone="UTC")
    when = dt.datetime(2026, 3, 2, 8, 0)
    cases = [
        (commands.info(), None),
        (commands.check(), "handshake"),
        (commands.reboot(), "reboot"),
        (commands.set_time(when), None),
        (commands.update_user("7", name="Li Wei", privilege=14, card=5, password="12"), None),
        (commands.delete_user("7"), None),
        (commands.delete_user("404"), None),  # deleting a user it lacks still succeeds there
    ]
    for text, effect in cases:
        wire = commands.render(text, when)
        outcome = await emulated.execute(terminal, parse_commands(commands.command_line(1, wire))[0])
        assert (outcome.code, outcome.effect) == (0, effect), text
        if text.startswith("DATA UPDATE"):
            user = terminal.users["7"]
            assert (user.name, user.privilege, user.card, user.password) == ("Li Wei", 14, "5", "12")
    assert "7" not in terminal.users
    assert abs((terminal.now() - when).total_seconds()) < 5


def test_results_are_parsed_with_the_info_block_they_carry() -> None:
    body = (
        b"ID=14&Return=0&CMD=INFO\r\n~DeviceName=ZK\nFWVersion=Ver 8\nUserCount=3\n"
        b"ID=15&Return=-1002&CMD=DATA\nID=16&Return=&CMD=REBOOT\nnoise\nID=abc&Return=0&CMD=INFO\n"
    )
    results = commands.parse_results(body, "utf-8")
    assert [(r.id, r.wire_id, r.returned, r.command) for r in results] == [
        ("14", 14, 0, "INFO"),
        ("15", 15, -1002, "DATA"),
        ("16", 16, None, "REBOOT"),
        ("abc", None, 0, "INFO"),
    ]
    assert results[0].details == {"~DeviceName": "ZK", "FWVersion": "Ver 8", "UserCount": "3"}
    assert results[1].details == {}


@pytest.mark.parametrize(
    ("code", "outcome", "meaning"),
    [
        (0, "ok", "done"),
        (25, "ok", "done (25)"),
        (-1, "failed", "bad parameter"),
        (-3, "failed", "read or write error on the terminal"),
        (-1002, "failed", "not supported by this terminal"),
        (-77, "failed", "error -77 (a code this gateway does not know)"),
        (None, "failed", "the terminal sent no Return code"),
    ],
)
def test_return_codes(code: int | None, outcome: str, meaning: str) -> None:
    assert commands.outcome(code) == outcome
    assert commands.meaning(code) == meaning
