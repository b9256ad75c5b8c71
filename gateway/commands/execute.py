"""What each remote command does, once accepted: on a terminal (inside its worker's task), on the
buffer, or for the gateway. Failures the requester should read are `CommandFailed` (a stable
code and a sentence); a DriverError is left to the caller, which answers it and lets the worker
handle the session as after any failed contact.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from punchgate.drivers.base import Administered, DeviceInfo, TerminalUser
from punchgate.gateway.clock import GatewayClock
from punchgate.gateway.commands.intake import parse_set_time
from punchgate.gateway.commands.settings import CommandsSettings
from punchgate.sync.command_contract import (
    AnyRequest,
    LogClearRequest,
    ResendRequest,
    SetTimeRequest,
    UsersDeleteRequest,
    UsersUpsertRequest,
)
from punchgate.sync.contract import utc_iso

if TYPE_CHECKING:
    from punchgate.gateway.health import DeviceHealth
    from punchgate.gateway.worker import DeviceWorker
    from punchgate.sync.store import Store

MAX_PROBLEMS_SHOWN = 10


class CommandFailed(Exception):
    """The command cannot be done as asked; `code` is the contract's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Environment:
    """What commands need of the gateway besides the terminal."""

    settings: CommandsSettings
    gateway_clock: GatewayClock
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)


def _local(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def info_result(info: DeviceInfo, health: DeviceHealth) -> dict[str, Any]:
    return {
        "serial_number": info.serial_number,
        "model": info.model,
        "firmware": info.firmware,
        "platform": info.platform,
        "device_name": info.device_name,
        "mac": info.mac,
        "clock": _local(info.clock),  # the terminal's local time, as it reads it
        "clock_drift_seconds": health.clock_drift_seconds,
        "enabled": info.extra.get("enabled"),
        "user_count": info.user_count,
        "user_capacity": info.user_capacity,
        "record_count": info.record_count,
        "record_capacity": info.record_capacity,
        "state": health.status.value,
    }


def _admin(worker: DeviceWorker) -> Administered:
    driver = worker.driver
    assert isinstance(driver, Administered)  # the service checked before queueing
    return driver


async def on_terminal(
    request: AnyRequest, worker: DeviceWorker, env: Environment
) -> tuple[dict[str, Any], bool]:
    """Run a terminal command in the worker's task: (result, end the session?)."""
    command = request.command
    if command == "device.info":
        info = await worker.contact()
        return info_result(info, worker.health), False
    if command == "device.read_now":
        return await _read_now(worker), False
    if command == "device.set_time":
        assert isinstance(request, SetTimeRequest)
        return await _set_time(request, worker, env), False
    if command == "device.restart":
        await worker.call("restart", _admin(worker).restart())
        return {"restarted": True}, True
    if command in ("device.enable", "device.disable"):
        await worker.call(command, _admin(worker).set_enabled(command == "device.enable"))
        info = await worker.contact()
        return {"enabled": info.extra.get("enabled", command == "device.enable")}, False
    if command == "users.list":
        users = await worker.call("list users", _admin(worker).list_users())
        return {"count": len(users), "users": [u.as_dict() for u in users]}, False
    if command == "users.upsert":
        assert isinstance(request, UsersUpsertRequest)
        return await _upsert(request, worker), False
    if command == "users.delete":
        assert isinstance(request, UsersDeleteRequest)
        changed = await worker.call("delete users", _admin(worker).delete_users(request.args.user_ids))
        return {"deleted": changed.deleted, "not_found": changed.not_found}, False
    if command == "log.clear":
        assert isinstance(request, LogClearRequest)
        return await _log_clear(request, worker), False
    raise CommandFailed("internal", f"{command} is not a terminal command")


async def _read_now(worker: DeviceWorker) -> dict[str, Any]:
    health = worker.health
    before = health.punches_new_total
    info = await worker.contact()
    await worker.reconcile(info)
    return {"records_read": health.last_read_count, "new": health.punches_new_total - before}


async def checked_set_time(
    request: SetTimeRequest, zone: dt.tzinfo, env: Environment
) -> tuple[dt.datetime, dt.datetime]:
    """(now, the instant asked for) of device.set_time, once the offset is within bounds and the
    gateway's clock is known to be synchronised; else CommandFailed."""
    now = env.now()
    if request.args.time is None:
        instant = now
    else:
        given = parse_set_time(request.args.time)
        instant = given if given.tzinfo is not None else given.replace(tzinfo=zone)
    target = instant.astimezone(zone).replace(tzinfo=None, microsecond=0)
    offset = (instant - now).total_seconds()
    limit = env.settings.set_time_max_offset_seconds
    if abs(offset) > limit:
        raise CommandFailed(
            "time_out_of_bounds",
            f"{target.isoformat()} is {offset:+.0f} s from the gateway's clock; at most {limit:g} s "
            "([commands] set_time_max_offset_seconds)",
        )
    sync = await asyncio.to_thread(env.gateway_clock.status)
    if not sync.synchronised:
        state = "not synchronised" if sync.synchronised is False else "of unknown sync state"
        raise CommandFailed(
            "clock_unsynchronised",
            f"the gateway's own clock is {state} ({sync.detail}): setting a terminal from it would "
            'spread the error (health.gateway_clock = "trust" skips this check)',
        )
    return now, instant


async def _set_time(request: SetTimeRequest, worker: DeviceWorker, env: Environment) -> dict[str, Any]:
    zone = worker.zone
    now, instant = await checked_set_time(request, zone, env)
    info = await worker.contact()
    drift_before = worker.health.clock_drift_seconds
    # As the automatic correction does it: the time to the second, in the terminal's zone.
    target = (env.now() + (instant - now)).astimezone(zone).replace(tzinfo=None, microsecond=0)
    await worker.call("set time", worker.driver.set_time(target))
    after = await worker.contact()
    drift_after = worker.health.clock_drift_seconds
    detail = (
        f"terminal clock set by remote command {request.id} ({request.requester}) from "
        f"{_local(info.clock)} to {target.isoformat()}; drift now "
        + ("unknown" if drift_after is None else f"{drift_after:+.0f} s")
    )
    worker.health.clock_corrected(drift_seconds=drift_before or 0.0, detail=detail)
    return {
        "set_to": target.isoformat(),
        "clock_before": _local(info.clock),
        "clock_after": _local(after.clock),
        "drift_before_seconds": drift_before,
        "drift_after_seconds": drift_after,
    }


async def _upsert(request: UsersUpsertRequest, worker: DeviceWorker) -> dict[str, Any]:
    users = [
        TerminalUser(
            user_id=spec.user_id,
            name=spec.name,
            privilege=spec.privilege,
            card=spec.card,
            password=spec.password,
        )
        for spec in request.args.users
    ]
    changed = await worker.call(f"write {len(users)} users", _admin(worker).upsert_users(users))
    if changed.problems:
        shown = "; ".join(f"user {p.user_id!r}: {p.problem}" for p in changed.problems[:MAX_PROBLEMS_SHOWN])
        more = len(changed.problems) - MAX_PROBLEMS_SHOWN
        raise CommandFailed(
            "user_does_not_fit",
            f"{len(changed.problems)} of {len(users)} users do not fit the terminal, nothing was sent: "
            + shown
            + (f"; and {more} more" if more > 0 else ""),
        )
    return {"created": changed.created, "updated": changed.updated}


async def _log_clear(request: LogClearRequest, worker: DeviceWorker) -> dict[str, Any]:
    if not worker.clear_log:
        raise CommandFailed(
            "clear_not_allowed",
            f"terminal {worker.name}'s config does not let the gateway clear it "
            "(clear_log = true for ZK terminals, mark_read = true for Anviz)",
        )
    info = await worker.contact()
    if info.serial_number != request.args.serial.strip():
        raise CommandFailed(
            "serial_mismatch",
            f"terminal {worker.name} reports serial number {info.serial_number!r}, the request says "
            f"{request.args.serial!r}: nothing was cleared",
        )
    health = worker.health
    before = health.punches_new_total
    # The guarded clear: read and commit everything first; the worker clears only what it stored.
    await worker.reconcile(info)
    after = await worker.contact()
    return {
        "records_read": health.last_read_count,
        "new": health.punches_new_total - before,
        "record_count_after": after.record_count,
    }


def resend_ranges(
    request: ResendRequest, now: dt.datetime
) -> tuple[dt.datetime, dt.datetime, dt.date | None]:
    """(from, to, local day or None) of punches.resend. A local day may lie anywhere within
    the UTC days around it (offsets -12:00..+14:00); the day filter does the rest."""
    args = request.args
    if args.day is not None:
        start = dt.datetime.combine(args.day - dt.timedelta(days=1), dt.time(), dt.UTC)
        return start, start + dt.timedelta(days=3), args.day
    assert args.from_ is not None
    return args.from_, args.to or now, None


async def resend(request: ResendRequest, store: Store, device: str, now: dt.datetime) -> dict[str, Any]:
    start, end, day = resend_ranges(request, now)
    note = {"command_id": request.id, "requester": request.requester}
    count = await asyncio.to_thread(
        lambda: store.requeue_range(device, utc_from=start, utc_to=end, local_day=day, note=note)
    )
    return {"requeued": count}


def push_info(health: DeviceHealth) -> dict[str, Any]:
    """device.info of a zk-push terminal: what it last reported (it is never asked)."""
    if health.info is None:
        raise CommandFailed("terminal_error", f"terminal {health.name} has not reported to the gateway yet")
    result = info_result(health.info, health)
    result["reported_at"] = None if health.last_contact is None else utc_iso(health.last_contact)
    return result
