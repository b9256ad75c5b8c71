"""Session cookies, CSRF tokens and the sign-in rate limit.

A session is a cookie, not a server-side record: `base64url(JSON).base64url(HMAC-SHA256)`,
signed with the key in `console/session.key` (punchgate.gateway.console.keyfile). It names the
account, the account's `generation` when it was signed (a changed password, role or disabled
flag ends it), a random nonce and when it was issued; it is good for `SESSION_HOURS`. The cookie
is HttpOnly (no script reads it), SameSite=Strict (no other site's page sends it) and Secure
when the console is served over TLS.

CSRF: every state-changing form carries `csrf`, an HMAC of the session's nonce under the same
key; a POST without it, or with another session's, is refused (403). The sign-in form, before
there is a session, carries an HMAC of a random nonce in its own short-lived cookie. The
Host/Origin check in front of every route (punchgate.gateway.http_security) refuses a
cross-site POST before any of this runs.

Sign-in attempts are limited per account name and per client address (`LoginLimiter`): after
`MAX_FAILURES_PER_NAME` failures for a name (or `MAX_FAILURES_PER_ADDRESS` from an address)
within `WINDOW_SECONDS`, further attempts are refused without checking the password until the
oldest failure leaves the window.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

SESSION_COOKIE = "pg_session"
LOGIN_COOKIE = "pg_login"
SESSION_HOURS = 12.0  # a shift and then some; then sign in again
LOGIN_FORM_SECONDS = 3600.0  # how long a sign-in form may stay open
MAX_FAILURES_PER_NAME = 5
MAX_FAILURES_PER_ADDRESS = 30
WINDOW_SECONDS = 15 * 60.0
MAX_TRACKED = 10_000  # names and addresses remembered at once (the oldest is forgotten)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class Session:
    name: str
    generation: int
    nonce: str
    issued: float


class Signer:
    """Signs and checks session cookies and CSRF tokens with one key."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _mac(self, purpose: str, data: bytes) -> bytes:
        return hmac.new(self._key, purpose.encode() + b"\0" + data, hashlib.sha256).digest()

    # --- sessions --------------------------------------------------------------------------
    def session_cookie(self, name: str, generation: int, *, now: float | None = None) -> tuple[str, Session]:
        session = Session(name, generation, secrets.token_urlsafe(16), time.time() if now is None else now)
        body = json.dumps(
            {"u": session.name, "g": session.generation, "n": session.nonce, "t": session.issued},
            separators=(",", ":"),
        ).encode()
        return f"{_b64(body)}.{_b64(self._mac('session', body))}", session

    def session(self, cookie: str | None, *, now: float | None = None) -> Session | None:
        """The session a cookie carries; None when it is missing, forged, malformed or expired."""
        if not cookie or len(cookie) > 1024 or cookie.count(".") != 1:
            return None
        body_text, mac_text = cookie.split(".")
        try:
            body, mac = _unb64(body_text), _unb64(mac_text)
        except ValueError:
            return None
        if not hmac.compare_digest(mac, self._mac("session", body)):
            return None
        try:
            data: Any = json.loads(body)
            session = Session(str(data["u"]), int(data["g"]), str(data["n"]), float(data["t"]))
        except (ValueError, KeyError, TypeError):
            return None
        age = (time.time() if now is None else now) - session.issued
        return session if -60 <= age <= SESSION_HOURS * 3600 else None

    # --- CSRF --------------------------------------------------------------------------------
    def csrf_token(self, nonce: str) -> str:
        return _b64(self._mac("csrf", nonce.encode()))[:32]

    def csrf_ok(self, nonce: str, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(self.csrf_token(nonce), str(token))

    def login_nonce_cookie(self, *, now: float | None = None) -> str:
        """A fresh nonce for a sign-in form, signed, with when it was made."""
        data = f"{secrets.token_urlsafe(16)}~{int(time.time() if now is None else now)}"
        return f"{data}.{_b64(self._mac('login', data.encode()))}"

    def login_nonce(self, cookie: str | None, *, now: float | None = None) -> str | None:
        if not cookie or len(cookie) > 200 or cookie.count(".") != 1:
            return None
        data, mac_text = cookie.split(".")
        try:
            mac = _unb64(mac_text)
        except ValueError:
            return None
        if not hmac.compare_digest(mac, self._mac("login", data.encode())):
            return None
        _nonce, _, issued = data.partition("~")
        try:
            age = (time.time() if now is None else now) - int(issued)
        except ValueError:
            return None
        return data if -60 <= age <= LOGIN_FORM_SECONDS else None


class LoginLimiter:
    """Failed sign-ins per name and per address in a sliding window (see the module docstring)."""

    def __init__(
        self,
        *,
        per_name: int = MAX_FAILURES_PER_NAME,
        per_address: int = MAX_FAILURES_PER_ADDRESS,
        window: float = WINDOW_SECONDS,
    ) -> None:
        self.per_name = per_name
        self.per_address = per_address
        self.window = window
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.get(key)
        if times is None:
            return deque()
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[key]
        return times

    def wait_seconds(self, name: str, address: str, *, now: float | None = None) -> float:
        """0 when an attempt may go ahead; otherwise how long until one may."""
        now = time.monotonic() if now is None else now
        wait = 0.0
        for key, limit in ((f"n:{name.lower()}", self.per_name), (f"a:{address}", self.per_address)):
            times = self._recent(key, now)
            if len(times) >= limit:
                wait = max(wait, times[0] + self.window - now)
        return wait

    def failed(self, name: str, address: str, *, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        for key in (f"n:{name.lower()}", f"a:{address}"):
            times = self._failures.setdefault(key, deque())
            times.append(now)
            self._failures.move_to_end(key)
            while len(times) > max(self.per_name, self.per_address):
                times.popleft()
        while len(self._failures) > MAX_TRACKED:
            self._failures.popitem(last=False)

    def succeeded(self, name: str) -> None:
        self._failures.pop(f"n:{name.lower()}", None)
