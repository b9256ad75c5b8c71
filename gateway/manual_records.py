"""Make-up punches as the gateway builds them: the entry from a request, its record id, its punch.

The buffer-side rules (conflicts, monthly limit, who may decide) are `punchgate.sync.manual`;
what needs a terminal's zone, family and names is here (docs/manual-punches.md).

Record id of a make-up punch (docs/mqtt-contract.md, "Identity and duplicates"): the first 32
hex digits of SHA-256 over the UTF-8 text
`1␟manual:{serial}␟{user_id}␟{local_time}␟{state}␟{verify}␟{entry_id}` (␟ is U+001F), every
value as the record carries it (`serial`, `user_id`, `local_time`, `state.code`,
`verify.code`, `manual.entry_id`). A terminal's id hashes six fields and a serial that never
starts with `manual:`; this text has seven, so no make-up punch can take a terminal punch's id,
and two entries for the same minute (one rejected, one approved) still differ.

`enter_manual` is the one way a make-up punch is entered, by the console and by the API alike.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import structlog

from punchgate.drivers.registry import DRIVERS, describe
from punchgate.gateway.normalize import ID_VERSION, timestamp_flags, to_utc
from punchgate.sync.manual import ManualEntry, ManualRefused, ManualSettings, utc_text
from punchgate.sync.records import ManualInfo, Punch

if TYPE_CHECKING:
    from punchgate.gateway.app import Application
    from punchgate.gateway.settings import Settings
    from punchgate.sync.store import Store

log = structlog.get_logger(__name__)

MANUAL_VERIFY = -1  # no verification took place at a terminal: the `manual` object says who vouches
MAX_TEXT = 500  # characters of a free-text reason or note
MAX_NAME = 100  # characters of a person's name
MAX_USER_ID = 64
FUTURE_SLACK = dt.timedelta(minutes=5)  # a make-up punch may be a few minutes ahead of our clock


def manual_record_id(
    serial: str, user_id: str, local_time: str, state: int, verify: int, entry_id: str
) -> str:
    key = "\x1f".join(
        (ID_VERSION, f"manual:{serial}", user_id, local_time, str(state), str(verify), entry_id)
    )
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Target:
    """Where a make-up punch goes: a configured terminal or the site's virtual terminal."""

    device: str
    zone: str
    driver_type: str | None  # None: the virtual terminal (state names of every family)
    virtual: bool

    def state_names(self) -> dict[int, str]:
        if self.driver_type is not None:
            return dict(describe(self.driver_type).state_names)
        names: dict[int, str] = {}
        for family in DRIVERS:
            for code, name in family.state_names.items():
                names.setdefault(code, name)
        return names


def target(settings: Settings, device: str) -> Target:
    """The terminal called `device` (404 ManualRefused when there is none)."""
    for terminal in settings.terminals:
        if terminal.name == device:
            return Target(device, settings.terminal_timezone(terminal), str(terminal.type), False)
    if device and device == settings.manual.virtual_terminal:
        return Target(device, settings.timezone, None, True)
    known = [t.name for t in settings.terminals] + [n for n in [settings.manual.virtual_terminal] if n]
    raise ManualRefused(f"no terminal named {device!r} (known: {', '.join(known) or 'none'})", status=404)


def _text(body: dict[str, Any], key: str, limit: int, *, required: bool = True) -> str:
    value = body.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value.strip():
        raise ManualRefused(f"{key} is required: a non-empty string", status=400)
    if len(value) > limit:
        raise ManualRefused(f"{key} is longer than {limit} characters", status=400)
    return value.strip()


def parse_state(value: Any, names: dict[int, str]) -> int:
    """A state by name (check_in, ...) or raw code; ManualRefused (400) naming the choices."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 255:
        return value
    if isinstance(value, str):
        by_name = {name: code for code, name in sorted(names.items(), reverse=True)}
        if value in by_name:
            return by_name[value]
        if value.isdigit() and int(value) <= 255:
            return int(value)
    raise ManualRefused(
        f"state must be one of {', '.join(sorted(set(names.values())))} or a code 0..255", status=400
    )


def parse_local_time(value: Any) -> dt.datetime:
    if not isinstance(value, str):
        raise ManualRefused(
            "local_time is required: the terminal-local time, e.g. 2026-03-02T08:00", status=400
        )
    try:
        when = dt.datetime.fromisoformat(value.strip().replace(" ", "T", 1))
    except ValueError:
        raise ManualRefused(
            f"local_time {value[:40]!r} is not an ISO 8601 time such as 2026-03-02T08:00", status=400
        ) from None
    if when.tzinfo is not None:
        raise ManualRefused(
            "local_time is the terminal's wall-clock time: write it without an offset", status=400
        )
    return when.replace(microsecond=0)


def new_entry(settings: Settings, serial_of: Any, body: dict[str, Any], *, now: dt.datetime) -> ManualEntry:
    """A pending entry from an API body, checked against everything that needs no buffer
    (ManualRefused with status 400/404 otherwise). `serial_of(device)` gives a terminal's
    last known serial number."""
    rules: ManualSettings = settings.manual
    unknown = sorted(
        set(body) - {"device", "user_id", "local_time", "state", "reason_code", "reason", "entered_by"}
    )
    if unknown:
        raise ManualRefused(f"unknown key {unknown[0]!r}", status=400)
    where = target(settings, _text(body, "device", 64))
    user_id = _text(body, "user_id", MAX_USER_ID)
    local = parse_local_time(body.get("local_time"))
    state = parse_state(body.get("state"), where.state_names())
    reason_code = _text(body, "reason_code", 40)
    if reason_code not in rules.reasons:
        raise ManualRefused(
            f"reason_code {reason_code!r} is not one of {', '.join(rules.reasons)}", status=400
        )
    reason = _text(body, "reason", MAX_TEXT)
    entered_by = _text(body, "entered_by", MAX_NAME)
    zone = ZoneInfo(where.zone)
    utc, _offset, _flags = to_utc(local, zone)
    today = now.astimezone(zone).date()
    earliest = today - dt.timedelta(days=rules.max_days_back)
    if local.date() < earliest:
        raise ManualRefused(
            f"local_time {local.isoformat()} is more than {rules.max_days_back} days back (the earliest day is "
            f"{earliest.isoformat()}; [manual] max_days_back)",
            status=400,
        )
    if utc > now + FUTURE_SLACK:
        raise ManualRefused(
            f"local_time {local.isoformat()} is in the future at terminal {where.device!r}", status=400
        )
    serial = f"virtual:{where.device}" if where.virtual else str(serial_of(where.device) or "")
    return ManualEntry(
        entry_id=str(uuid.uuid4()),
        device=where.device,
        serial=serial,
        user_id=user_id,
        local_time=local.isoformat(),
        utc_time=utc_text(utc),
        state=state,
        reason_code=reason_code,
        reason=reason,
        entered_by=entered_by,
        entered_at=_utc_ms(now),
    )


def _utc_ms(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _parse_utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def punch_builder(settings: Settings) -> Any:
    """`(entry, approved_by, approved_at) -> Punch` for `Store.add_manual` / `decide_manual`."""

    def build(entry: ManualEntry, approved_by: str | None, approved_at: dt.datetime) -> Punch:
        where = target(settings, entry.device)
        local = dt.datetime.fromisoformat(entry.local_time)
        utc, offset, dst_flags = to_utc(local, ZoneInfo(where.zone))
        return Punch(
            id=manual_record_id(
                entry.serial, entry.user_id, entry.local_time, entry.state, MANUAL_VERIFY, entry.entry_id
            ),
            device=entry.device,
            device_serial=entry.serial,
            user_id=entry.user_id,
            local_time=local,
            utc_time=utc,
            utc_offset_seconds=offset,
            state=entry.state,
            state_name=where.state_names().get(entry.state),
            verify=MANUAL_VERIFY,
            verify_name=None,
            work_code=0,
            source="manual",
            historical=True,
            flags=dst_flags + timestamp_flags(local, utc, dt.datetime.now(dt.UTC)),
            manual=ManualInfo(
                entry_id=entry.entry_id,
                reason_code=entry.reason_code,
                reason=entry.reason,
                entered_by=entry.entered_by,
                entered_at=_parse_utc(entry.entered_at),
                approved_by=approved_by,
                approved_at=approved_at,
            ),
        )

    return build


def enter_manual(
    app: Application, store: Store, body: dict[str, Any], *, via: str | None = None
) -> ManualEntry:
    """Enter a make-up punch from a request's `body`: the entry checked and built (`new_entry`),
    then checked against the buffer and stored in one transaction (`Store.add_manual`), logged
    (`manual_punch_entered`, with `via` when given), and the forwarder woken when it needs no
    approval and is a punch already. ManualRefused (with its status) when a rule refuses it.
    Blocking (the buffer's transaction): call it on the API's threads."""
    entry = new_entry(
        app.settings,
        lambda device: store.get_device_meta(device).get("serial_number", ""),
        body,
        now=dt.datetime.now(dt.UTC),
    )
    entry = store.add_manual(entry, app.settings.manual, punch_builder(app.settings))
    log.info(
        "manual_punch_entered",
        entry=entry.entry_id,
        device=entry.device,
        user=entry.user_id,
        local_time=entry.local_time,
        by=entry.entered_by,
        status=entry.status,
        **({"via": via} if via is not None else {}),
    )
    if entry.status == "approved" and app.forwarder is not None:
        app.forwarder.notify_new_punches()
    return entry
