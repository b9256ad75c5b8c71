"""Who may talk to the HTTP API: the Host and Origin rules and the bearer token check.

The API listens on loopback, but every web page the operator opens runs on that machine too.
Two attacks follow, and these rules stop them:

* **DNS rebinding.** A page at evil.example re-points its own name to 127.0.0.1 and then reads
  the API as "same origin". The browser still sends `Host: evil.example:9108`, so every request
  whose Host is not one of ours is refused (403), GET /api/devices included.
* **Cross-site requests (CSRF).** A page can make the browser POST to 127.0.0.1 without
  reading the answer. Browsers send `Origin` with such requests: an Origin that is not one of
  ours is refused (403), and every state-changing request needs the token besides, which a
  page cannot read (`punchgate.gateway.token`).

Ours means: `localhost`, any 127.0.0.0/8 address and `::1`, the configured bind address (unless
it is a wildcard such as 0.0.0.0), and the names in `[http] allowed_hosts`; each with the port
the server listens on (an allowed_hosts entry may name its own port, for a proxy in front). A
Host without a port means port 80, an Origin without one the scheme's default port.
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

LOOPBACK_NAMES = frozenset({"localhost"})
WILDCARD_BINDS = frozenset({"", "0.0.0.0", "::", "*"})
DEFAULT_PORTS = {"http": 80, "https": 443}


def split_host_port(value: str, default_port: int) -> tuple[str, int] | None:
    """`name:port`, `1.2.3.4`, `[::1]:9108` → (lower-case host, port); None when malformed."""
    value = value.strip()
    if value.startswith("["):
        host, bracket, rest = value[1:].partition("]")
        if not bracket or not host:
            return None
        if rest and not rest.startswith(":"):
            return None
        port_text = rest[1:] if rest else ""
    else:
        host, colon, port_text = value.partition(":")
        if not host or ":" in port_text or (colon and not port_text):
            return None
    if not port_text:
        return host.lower(), default_port
    if not port_text.isdigit() or len(port_text) > 5 or not 0 < int(port_text) < 65536:
        return None
    return host.lower(), int(port_text)


def _is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


@dataclass(frozen=True)
class HostPolicy:
    """The hosts and ports the API answers to (see the module docstring)."""

    port: int
    names: frozenset[tuple[str, int | None]]  # None: the listening port

    @classmethod
    def build(cls, *, port: int, bind: str, allowed_hosts: list[str]) -> HostPolicy:
        names: set[tuple[str, int | None]] = set()
        if bind.strip("[]").lower() not in WILDCARD_BINDS:
            names.add((bind.strip("[]").lower(), None))
        for entry in allowed_hosts:
            parsed = split_host_port(entry, 0)
            if parsed is not None:
                host, entry_port = parsed
                names.add((host, entry_port or None))
        return cls(port=port, names=frozenset(names))

    def allows(self, host: str, port: int) -> bool:
        if (host, port) in self.names:
            return True
        if port != self.port:
            return False
        return _is_loopback(host) or (host, None) in self.names

    def host_problem(self, header: str | None) -> str | None:
        """Why this Host header is refused; None when it is one of ours."""
        if not header:
            return "a Host header is required"
        parsed = split_host_port(header, 80)
        if parsed is None or not self.allows(*parsed):
            return f"Host {header[:100]!r} is not this gateway (see [http] allowed_hosts)"
        return None

    def origin_problem(self, header: str | None) -> str | None:
        """Why this Origin header is refused; None when absent or one of ours."""
        if header is None:
            return None
        parsed = _origin_host_port(header)
        if parsed is None or not self.allows(*parsed):
            return f"Origin {header[:100]!r} may not use this API"
        return None


def _origin_host_port(origin: str) -> tuple[str, int] | None:
    """`http://localhost:9108` → ("localhost", 9108); None for `null` or anything but an origin."""
    try:
        parts = urlsplit(origin.strip())
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or parts.path or parts.query or parts.fragment or "@" in parts.netloc:
        return None
    return split_host_port(parts.netloc, DEFAULT_PORTS[scheme])


def bearer_problem(header: str | None, token: str) -> str | None:
    """Why the Authorization header does not carry `token`; None when it does (constant time)."""
    if not header:
        return "no API token sent"
    scheme, _, offered = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not offered.strip():
        return "no API token sent"
    if not hmac.compare_digest(offered.strip().encode(), token.encode()):
        return "wrong API token"
    return None
