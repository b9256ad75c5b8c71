"""Enrolled users as remote commands see them, in ZK terms: mapping, fitting, planning the writes.

A ZK user record is addressed by its internal `uid` (1..65535) and carries the `user_id` punches
show, a name in the terminal's text encoding, a privilege (0 user, 14 admin, as pyzk and the
vendor SDK write them), a keypad password, a card number and a group. Two layouts exist
(`protocol.users`): 72 bytes on TFT firmware (24-byte name and user id, 8-byte password) and
28 bytes on black-and-white firmware (8-byte name, 5-byte password, numeric user id). Which one a
terminal uses is learned from its user table; a terminal without users is assumed to use the
layout of its transport (TCP: TFT, UDP: black-and-white), as the driver does everywhere.

Everything here is pure: `plan_upsert` checks every user against the layout and the encoding
before anything is sent, and says which user does not fit and why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from punchgate.drivers.base import TerminalUser, UserProblem
from punchgate.drivers.zk import protocol as zp

PRIVILEGE_USER = 0
PRIVILEGE_ADMIN = 14  # pyzk's USER_ADMIN; bits 3-1 of the privilege byte are the level
MAX_UID = 0xFFFF

# (name bytes, user id bytes, password bytes) per record size; a 28-byte user id is a u32.
FIELD_SIZES = {72: (24, 24, 8), 28: (8, 0, 5)}


def to_terminal_user(record: zp.UserRecord) -> TerminalUser:
    level = (record.privilege >> 1) & 0x07
    return TerminalUser(
        user_id=record.user_id,
        name=record.name,
        privilege="admin" if level else "user",
        card=record.card,
        password_set=bool(record.password),
    )


def user_problem(user: TerminalUser, record_size: int, encoding: str) -> str | None:
    """Why `user` cannot be stored in a record of `record_size` bytes, or None when it fits."""
    name_size, id_size, password_size = FIELD_SIZES[record_size]
    if record_size == 28:
        if not user.user_id.isascii() or not user.user_id.isdigit() or int(user.user_id) > 0xFFFFFFFF:
            return f"user id {user.user_id!r}: this terminal keeps numeric user ids (0..4294967295) only"
    elif not user.user_id.isascii() or not user.user_id.isprintable():
        return f"user id {user.user_id!r}: letters, digits and signs of ASCII only"
    elif len(user.user_id) > id_size:
        return f"user id {user.user_id!r} has {len(user.user_id)} characters, the terminal keeps {id_size}"
    if user.name is not None:
        try:
            encoded = user.name.encode(encoding)
        except UnicodeEncodeError as exc:
            bad = user.name[exc.start : exc.end]
            return f"name {user.name!r}: {bad!r} cannot be written in the terminal's encoding {encoding}"
        if len(encoded) > name_size:
            return (
                f"name {user.name!r} needs {len(encoded)} bytes in {encoding}, the terminal keeps {name_size}"
            )
    if user.password is not None and len(user.password) > password_size:
        return f"password of {len(user.password)} digits: the terminal keeps {password_size}"
    return None


@dataclass
class UpsertPlan:
    """What to write (records in the terminal's layout), and what the answer will say."""

    records: list[zp.UserRecord] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    problems: list[UserProblem] = field(default_factory=list)


def plan_upsert(
    users: Sequence[TerminalUser], existing: Sequence[zp.UserRecord], record_size: int, encoding: str
) -> UpsertPlan:
    """The records to write for `users`, given the terminal's current table. With any problem
    the plan holds only problems: nothing is to be sent."""
    plan = UpsertPlan()
    by_id = {record.user_id: record for record in existing}
    used = {record.uid for record in existing}
    next_uid = 1
    for user in users:
        problem = user_problem(user, record_size, encoding)
        if problem is not None:
            plan.problems.append(UserProblem(user.user_id, problem))
            continue
        old = by_id.get(user.user_id)
        if old is None:
            while next_uid in used:
                next_uid += 1
            if next_uid > MAX_UID:
                plan.problems.append(UserProblem(user.user_id, "no free internal uid left (65535 users)"))
                continue
            used.add(next_uid)
            old = zp.UserRecord(uid=next_uid, user_id=user.user_id)
            plan.created.append(user.user_id)
        else:
            plan.updated.append(user.user_id)
        record = _merged(old, user)
        by_id[user.user_id] = record
        plan.records.append(record)
    if plan.problems:
        return UpsertPlan(problems=plan.problems)
    return plan


def _merged(old: zp.UserRecord, user: TerminalUser) -> zp.UserRecord:
    privilege = old.privilege
    if user.privilege is not None:
        level = PRIVILEGE_ADMIN if user.privilege == "admin" else PRIVILEGE_USER
        privilege = (old.privilege & 0x01) | level  # keep the "disabled" bit as it is
    return zp.UserRecord(
        uid=old.uid,
        user_id=user.user_id,
        name=old.name if user.name is None else user.name,
        privilege=privilege,
        password=old.password if user.password is None else user.password,
        card=old.card if user.card is None else user.card,
        group=old.group,
        timezone_flag=old.timezone_flag,
        timezones=old.timezones,
    )
