"""What the `[push]` section means for the listener: whether it runs, for which terminals, where.

`push_terminals` are the enabled zk-push entries; `push_enabled` is `[push] enabled`, or by
default whether there are any; `listener_summary` is check-config's line about where push
terminals must send (with a warning for a wildcard or a loopback bind); `tls_context` loads
the optional certificate and key, and says what to fix when they cannot be loaded.
"""

from __future__ import annotations

import ipaddress
import ssl
from typing import TYPE_CHECKING, Any

from punchgate.drivers.zk_push.config import ZkPushTerminal

if TYPE_CHECKING:
    from punchgate.gateway.settings import Settings


def push_terminals(settings: Settings) -> list[ZkPushTerminal]:
    """The enabled terminal entries the push listener serves."""
    return [t for t in settings.terminals if t.enabled and isinstance(t, ZkPushTerminal)]


def push_enabled(settings: Settings) -> bool:
    """Serve the listener? As `[push] enabled` says; by default when a zk-push terminal is configured."""
    enabled = settings.push.enabled
    return bool(push_terminals(settings)) if enabled is None else enabled


def listens_everywhere(bind: str) -> bool:
    """True for a wildcard bind address (0.0.0.0, ::): every interface, every network."""
    try:
        return ipaddress.ip_address(bind).is_unspecified
    except ValueError:
        return False


def listener_summary(settings: Settings) -> str:
    """One line for check-config: where push terminals must send, or that nothing listens."""
    push = settings.push
    if not push_enabled(settings):
        return "push listener off"
    scheme = "https" if push.tls_cert_file is not None else "http"
    host = f"[{push.bind}]" if ":" in push.bind else push.bind
    line = (
        f"push listener {scheme}://{host}:{push.port}/iclock/ for {len(push_terminals(settings))} terminals"
    )
    if listens_everywhere(push.bind):
        line += " (WARNING: bind is a wildcard: every interface and network can reach it)"
    elif _loopback(push.bind):
        line += " (loopback only: terminals on the LAN cannot reach it; set [push] bind)"
    return line


def _loopback(bind: str) -> bool:
    try:
        return ipaddress.ip_address(bind).is_loopback
    except ValueError:
        return bind.lower() == "localhost"


class PushConfigError(Exception):
    """The listener cannot start as configured (its TLS files); the message says what to fix."""


def tls_context(cert: Any, key: Any) -> ssl.SSLContext | None:
    """The listener's HTTPS context; None without a certificate and key (plain HTTP)."""
    if cert is None or key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise PushConfigError(
            f"[push] tls_cert_file {cert} / tls_key_file {key}: cannot load the certificate and key: {exc}"
        ) from None
    return context
