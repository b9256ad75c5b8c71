"""The ZK driver's own exceptions, and the mapping of pyzk and socket errors onto the driver's.

Every blocking pyzk call runs through `map_error`, so the gateway sees only the
`punchgate.drivers.base` hierarchy, each class carrying its `DeviceFault` code: a closed port
is `UnreachableError` (unreachable), silence or an answer too slow for the call's deadline is
`DriverTimeoutError` (timeout), a wrong comm key is `AuthError` (auth_failed), a foreign
device is `UnsupportedDeviceError` (unsupported), and anything pyzk could not parse, or that
broke the driver's bounds (an oversized reply, endless data, a count beyond capacity), is
`ProtocolError` (protocol_error). Kept apart from the
driver so the mapping is unit-tested without sockets and read in one place.
"""

from __future__ import annotations

import errno
import socket
from typing import Final

from zk.exception import ZKErrorConnection, ZKErrorResponse, ZKNetworkError

from punchgate.drivers.base import (
    AuthError,
    DriverError,
    DriverTimeoutError,
    ProtocolError,
    RawPunch,
    UnreachableError,
    UnsupportedDeviceError,
)
from punchgate.drivers.faults import DeviceFault

# ---------------------------------------------------------------------------------------
# Raised inside the pool thread by the patched pyzk client, mapped by `map_error`
# ---------------------------------------------------------------------------------------


class NotZkError(Exception):
    """Something answered, but not with the ZK protocol."""

    def __init__(self, message: str, raw: bytes) -> None:
        self.raw = raw
        super().__init__(f"{message} (raw={raw[:32].hex()})")


class AuthRefused(Exception):
    """The terminal refused the comm key (or wants one and none is configured)."""


class LimitExceeded(Exception):
    """What the terminal sent broke one of the driver's bounds (`limits`); `reason` says which.

    The session ends with `protocol_error` and this reason: the terminal's claims are not
    to be believed, and nothing it sent in this call is kept.
    """

    reason = "limit exceeded"


class OversizedReply(LimitExceeded):
    """A reply announced more bytes than the driver accepts for it (refused before reading them)."""

    reason = "oversized reply"


class EndlessData(LimitExceeded):
    """The terminal kept sending past what it announced, or past what was asked of it."""

    reason = "endless data"


class CountBeyondCapacity(LimitExceeded):
    """A count beyond the terminal's declared capacity or the driver's hard ceiling."""

    reason = "claimed count beyond capacity"


class TooSlow(Exception):
    """The answer was still incomplete when the call's deadline came (it kept trickling in)."""


class Aborted(Exception):
    """The session gave up on the call from the event loop (deadline or cancellation)."""


# ---------------------------------------------------------------------------------------
# Driver errors specific to ZK terminals
# ---------------------------------------------------------------------------------------


class CountMismatchError(ProtocolError):
    """A read whose parsed records differ from the count the terminal reports.

    The pass failed; `records` holds what was parsed, for diagnostics only (the probe shows
    it). Nothing in it is trusted for storing or clearing.
    """

    def __init__(self, message: str, *, device: str, reported: int, records: list[RawPunch]) -> None:
        super().__init__(message, device=device)
        self.reported = reported
        self.records = records


class ClearRefusedError(DriverError):
    """clear_records refused: the terminal's count is not what the caller stored.

    Punches arrived (or vanished) since the read; clearing now would lose some. The next
    full read picks them up and the following clear can go ahead.
    """

    fault = DeviceFault.PROTOCOL_ERROR


# ---------------------------------------------------------------------------------------
# The mapping
# ---------------------------------------------------------------------------------------

_UNREACHABLE_ERRNOS: Final = frozenset(
    {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN}
)


def _root_cause(exc: BaseException) -> BaseException:
    """pyzk wraps socket errors in ZKNetworkError(str(e)); look through to the original."""
    seen = exc
    while isinstance(seen, ZKNetworkError):
        inner = seen.__cause__ or seen.__context__
        if inner is None:
            break
        seen = inner
    return seen


def _map_os_error(cause: OSError, *, device: str, what: str, connecting: bool, udp: bool) -> DriverError:
    """A socket-level failure (TimeoutError and gaierror are OSErrors too)."""
    if isinstance(cause, TimeoutError):
        if connecting and udp:
            # Silence over UDP is all a missing terminal ever says.
            return UnreachableError(f"{what}: no answer within the timeout", device=device)
        if connecting:
            return DriverTimeoutError(f"{what}: connected, but no answer to CONNECT", device=device)
        return DriverTimeoutError(f"{what}: the terminal stopped answering", device=device)
    if isinstance(cause, socket.gaierror):
        return UnreachableError(f"{what}: cannot resolve the address: {cause.strerror}", device=device)
    if isinstance(cause, ConnectionRefusedError) or cause.errno in _UNREACHABLE_ERRNOS:
        return UnreachableError(f"{what}: {cause.strerror or cause}", device=device)
    if isinstance(cause, ConnectionError | BrokenPipeError):
        return UnreachableError(f"{what}: connection lost ({cause})", device=device)
    return UnreachableError(f"{what}: {cause}", device=device)


def map_error(
    exc: BaseException, *, device: str, what: str, connecting: bool, udp: bool = False
) -> DriverError:
    """Turn whatever pyzk or the socket raised into the driver's error hierarchy."""
    if isinstance(exc, DriverError):
        return exc
    if isinstance(exc, AuthRefused):
        return AuthError(f"{what}: {exc} (check comm_key)", device=device)
    if isinstance(exc, NotZkError):
        return UnsupportedDeviceError(f"{what}: not a ZK terminal: {exc}", device=device)
    if isinstance(exc, LimitExceeded):
        return ProtocolError(f"{what}: {exc.reason}: {exc}", device=device)
    if isinstance(exc, TooSlow):
        return DriverTimeoutError(f"{what}: the terminal answers too slowly: {exc}", device=device)
    if isinstance(exc, Aborted):
        return DriverTimeoutError(f"{what}: abandoned ({exc})", device=device)
    cause = _root_cause(exc)
    if isinstance(cause, OSError):
        return _map_os_error(cause, device=device, what=what, connecting=connecting, udp=udp)
    if isinstance(exc, ZKErrorConnection):
        return ProtocolError(f"{what}: not connected", device=device)
    if isinstance(exc, ZKErrorResponse):
        return ProtocolError(f"{what}: {exc}", device=device)
    # pyzk parsing garbage: struct.error, IndexError, ValueError, TypeError, ZkFrameError...
    return ProtocolError(f"{what}: unexpected reply ({type(exc).__name__}: {exc})", device=device)
