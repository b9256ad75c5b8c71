"""What an emulated terminal remembers: its clock, users and attendance log.

The log is kept encoded in the profile's record layout (a bytearray), so a bulk read is a
slice and 500 terminals with large logs stay cheap in memory.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from collections.abc import Callable

from punchgate.drivers.zk.emulator.profiles import FirmwareProfile
from punchgate.drivers.zk.protocol import (
    AttendanceRecord,
    UserRecord,
    decode_attendance,
    encode_attendance,
    encode_data_set,
    encode_time,
    encode_user,
)


class TerminalClock:
    """The terminal's naive local clock: host time + offset + drift accumulated since set.

    `drift_rate` is seconds gained per real second (0.001 = 86 s a day fast).
    """

    def __init__(
        self,
        *,
        offset: dt.timedelta = dt.timedelta(0),
        drift_rate: float = 0.0,
        host_now: Callable[[], dt.datetime] = dt.datetime.now,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._host_now = host_now
        self._monotonic = monotonic
        self._offset = offset
        self._drift_rate = drift_rate
        self._anchor = monotonic()

    @property
    def drift_rate(self) -> float:
        return self._drift_rate

    @property
    def offset(self) -> dt.timedelta:
        """Current difference between the terminal clock and the host clock."""
        return self._offset + dt.timedelta(seconds=self._drift_rate * (self._monotonic() - self._anchor))

    def now(self) -> dt.datetime:
        return (self._host_now() + self.offset).replace(microsecond=0)

    def set(self, when: dt.datetime) -> None:
        """Set the clock (SET_TIME); drift keeps accumulating from here."""
        self._offset = when - self._host_now()
        self._anchor = self._monotonic()

    def set_offset(self, offset: dt.timedelta) -> None:
        self._offset = offset
        self._anchor = self._monotonic()

    def set_drift(self, rate: float) -> None:
        """Change the drift rate without a jump in the current reading."""
        self._offset = self.offset
        self._anchor = self._monotonic()
        self._drift_rate = rate


# Verify types and their share in generated logs: fingerprint, face, card, password.
_VERIFY_WEIGHTS = ((1, 0.6), (15, 0.25), (2, 0.1), (0, 0.05))
# A working day: (state, mean minute of day, spread in minutes, weight).
_DAY_PATTERN = (
    (0, 8 * 60, 25, 1.0),  # check-in
    (2, 12 * 60, 15, 0.6),  # break-out
    (3, 13 * 60, 15, 0.6),  # break-in
    (1, 17 * 60 + 15, 30, 1.0),  # check-out
    (4, 18 * 60 + 30, 20, 0.08),  # overtime-in
    (5, 20 * 60 + 30, 30, 0.08),  # overtime-out
)


class TerminalData:
    """Users and attendance log of one terminal, in the profile's layouts."""

    def __init__(self, profile: FirmwareProfile, *, text_encoding: str = "utf-8") -> None:
        self.profile = profile
        self.text_encoding = text_encoding  # how user names are stored (e.g. gbk)
        self.record_size = profile.attendance_record_size
        self.user_capacity = profile.user_capacity
        self.record_capacity = profile.record_capacity
        self._log = bytearray()
        self._users: dict[int, UserRecord] = {}  # by uid
        self._uid_by_user_id: dict[str, int] = {}
        self.oplog_count = 0

    # -- users ---------------------------------------------------------------------------

    @property
    def users(self) -> list[UserRecord]:
        return [self._users[uid] for uid in sorted(self._users)]

    @property
    def user_count(self) -> int:
        return len(self._users)

    def user_by_id(self, user_id: str) -> UserRecord | None:
        uid = self._uid_by_user_id.get(user_id)
        return None if uid is None else self._users[uid]

    def put_user(self, user: UserRecord) -> None:
        """Add or replace a user (matched on uid), checking it fits the profile's layout."""
        encode_user(
            user, self.profile.user_record_size, encoding=self.text_encoding
        )  # raises ValueError when it cannot be stored
        if user.uid not in self._users and len(self._users) >= self.user_capacity:
            raise ValueError(f"user table full ({self.user_capacity} users)")
        holder = self._uid_by_user_id.get(user.user_id)
        if holder is not None and holder != user.uid:
            raise ValueError(f"user id {user.user_id!r} already belongs to uid {holder}")
        old = self._users.get(user.uid)
        if old is not None:
            self._uid_by_user_id.pop(old.user_id, None)
        self._users[user.uid] = user
        self._uid_by_user_id[user.user_id] = user.uid
        self.oplog_count += 1

    def add_user(self, user_id: str, *, name: str = "", privilege: int = 0, card: int = 0) -> UserRecord:
        """Enrol a new user with the next free uid."""
        uid = max(self._users, default=0) + 1
        user = UserRecord(uid=uid, user_id=user_id, name=name, privilege=privilege, card=card)
        self.put_user(user)
        return user

    def delete_user(self, uid: int) -> bool:
        user = self._users.pop(uid, None)
        if user is None:
            return False
        self._uid_by_user_id.pop(user.user_id, None)
        self.oplog_count += 1
        return True

    def clear_users(self) -> None:
        self._users.clear()
        self._uid_by_user_id.clear()

    def user_data_set(self) -> bytes:
        size = self.profile.user_record_size
        return encode_data_set(encode_user(u, size, encoding=self.text_encoding) for u in self.users)

    # -- attendance log ------------------------------------------------------------------

    @property
    def record_count(self) -> int:
        return len(self._log) // self.record_size

    @property
    def log_full(self) -> bool:
        return self.record_count >= self.record_capacity

    def append_record(
        self, user: UserRecord, when: dt.datetime, *, state: int, verify: int, work_code: int
    ) -> bytes:
        """Store one punch; returns its encoded bytes. The caller checks capacity first."""
        record = AttendanceRecord(
            uid=user.uid,
            user_id=user.user_id,
            time_raw=encode_time(when),
            timestamp=when,
            verify=verify,
            state=state,
            work_code=work_code,
        )
        raw = encode_attendance(record, self.record_size, eight_byte_variant=self.profile.eight_byte_variant)
        self._log += raw
        return raw

    def records(self) -> list[AttendanceRecord]:
        size, variant = self.record_size, self.profile.eight_byte_variant
        log = bytes(self._log)
        return [
            decode_attendance(log[i : i + size], size, eight_byte_variant=variant)
            for i in range(0, len(log), size)
        ]

    def clear_log(self) -> int:
        """Erase the attendance log; returns how many records were dropped."""
        count = self.record_count
        self._log.clear()
        self.oplog_count += 1
        return count

    def attendance_data_set(self, *, missing: int = 0) -> bytes:
        """The log as a data set; `missing` leaves off the newest records (short-read fault)."""
        end = max(0, len(self._log) - missing * self.record_size)
        return encode_data_set([bytes(self._log[:end])])

    def copy_log_from(self, other: TerminalData) -> None:
        """Take another terminal's users and attendance log as this one's (same layouts): a
        fleet of thousands gets realistic logs from a few generated ones in milliseconds each,
        instead of drawing every record again (0.2 s per 3,000 records)."""
        if (
            other.record_size != self.record_size
            or other.profile.user_record_size != self.profile.user_record_size
        ):
            raise ValueError("the other terminal's layouts differ")
        if other.record_count > self.record_capacity:
            raise ValueError(f"{other.record_count} records exceed the capacity of {self.record_capacity}")
        self._users = dict(other._users)  # UserRecord is immutable: sharing them is safe
        self._uid_by_user_id = dict(other._uid_by_user_id)
        self._log = bytearray(other._log)
        self.oplog_count += 1

    def generate_log(self, *, records: int, days: int, users: int, seed: int, end: dt.datetime) -> None:
        """Add `records` realistic punches by `users` users over the `days` days up to `end`."""
        if records < 0 or days < 1 or users < 1:
            raise ValueError("records must be >= 0, days and users >= 1")
        if self.record_count + records > self.record_capacity:
            raise ValueError(
                f"{records} more records exceed the capacity of {self.record_capacity} "
                f"({self.record_count} already stored)"
            )
        rng = random.Random(seed)
        people = []
        for n in range(1, users + 1):
            user_id = str(n)
            name = f"User {n}" if self.profile.user_record_size > 28 else f"U{n}"[:8]
            user = self.user_by_id(user_id) or self.add_user(user_id, name=name)
            people.append(user)
        verifies = [v for v, _ in _VERIFY_WEIGHTS]
        verify_weights = [w for _, w in _VERIFY_WEIGHTS]
        slots = [(state, mean, spread) for state, mean, spread, _ in _DAY_PATTERN]
        slot_weights = [w for *_, w in _DAY_PATTERN]
        first_day = (end - dt.timedelta(days=days - 1)).replace(hour=0, minute=0, second=0)
        horizon = int((end - first_day).total_seconds())
        # Punches after `end` are drawn again rather than clamped (clamping piled them onto one
        # second), and so is an exact repeat: a real terminal does not log one person's same
        # punch twice in a second, and the gateway would rightly treat it as one punch.
        seen: set[tuple[int, int, int, int]] = set()
        while len(seen) < records:
            state, mean, spread = rng.choices(slots, slot_weights)[0]
            day = rng.randrange(days)
            minute = min(max(int(rng.gauss(mean, spread)), 0), 24 * 60 - 1)
            second = day * 86400 + minute * 60 + rng.randrange(60)
            if second > horizon:
                second = rng.randrange(max(1, horizon))
            seen.add((second, rng.randrange(users), state, rng.choices(verifies, verify_weights)[0]))
        stamps = sorted(seen)
        for second, person, state, verify in stamps:
            when = first_day + dt.timedelta(seconds=second)
            self.append_record(people[person], when, state=state, verify=verify, work_code=0)
