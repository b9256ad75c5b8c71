"""`punchgate status` to a pipe or a file: the text the daemon laid out (GET /api/status.txt), written as is.

Scripts and monitoring run `punchgate status` often; importing the renderer (rich's layout,
the fault catalogue, the console's views, urllib) and laying out 500 terminals cost about
38 ms of CPU a run beyond `--version` (issue 18). Without colour, the daemon makes the same
text and keeps it (`punchgate.gateway.status_text`); this module, imported by the command
alone, needs only what `--version` has loaded already (a socket, no urllib: an HTTP/1.1 GET
with `Connection: close` is all it takes). It steps aside (None: `status_cli.show_status`
runs as before) whenever the text might differ from what that would print: colour (a
terminal, FORCE_COLOR, TTY_COMPATIBLE=1), the wide table (WIDE columns or more), a width
below MIN_WIDTH, a URL other than plain http, a daemon that answers anything but the text
(an older one: 404; another zone: 409), or does not answer (the error messages are
status_cli's; a timeout is reported here, so the wait is not doubled).
"""

from __future__ import annotations

import os
import socket
import sys
import time
from urllib.parse import quote, urlsplit

WIDE = 120  # columns from which terminals are a table; narrower, a block each (80 columns fit)
MIN_WIDTH = 20  # narrower, the CLI lays out itself
TIMEOUT = 5.0  # seconds, as status_cli's request
MAX_BODY = 64 * 1024 * 1024  # bytes; 500 terminals' text is about 200 kB


def zone_label() -> str:
    """This process's zone as the CLI and the daemon compare it: name and offset now."""
    return time.strftime("%Z, UTC%z")


def plain_width(environ: dict[str, str] | None = None) -> int | None:
    """The width rich's `Console()` would lay out on stdout when it prints without colour
    (rich 15's rules: TTY_COMPATIBLE, FORCE_COLOR, isatty; COLUMNS, else the first of
    stdin/stdout/stderr that is a terminal, else 80); None when it would use colour."""
    env = os.environ if environ is None else environ
    if sys.platform == "win32" or sys.stdout is None:
        return None
    compatible = env.get("TTY_COMPATIBLE", "")
    if compatible == "1":
        return None
    if compatible != "0":
        force = env.get("FORCE_COLOR")
        if force:
            return None
        if force is None:
            try:
                if sys.stdout.isatty():
                    return None
            except ValueError:  # closed: rich takes it for no terminal
                pass
    columns = env.get("COLUMNS")
    if columns is not None and columns.isdigit():
        return int(columns)
    width = None
    for descriptor in (0, 1, 2):
        try:
            width = os.get_terminal_size(descriptor).columns
        except (AttributeError, ValueError, OSError):
            continue
        break
    return width or 80


def _request(base_url: str, width: int) -> tuple[bytes, str, int] | None:
    """(request bytes, host, port) for the text at `width`; None for a URL left to status_cli."""
    split = urlsplit(base_url)
    host = split.hostname
    if split.scheme != "http" or split.query or split.fragment or "@" in split.netloc:
        return None
    try:
        port = split.port or 80
    except ValueError:
        return None
    if not host or not host.isascii() or not split.netloc.isascii():
        return None
    query = f"width={width}&zone={quote(zone_label())}"
    tz = os.environ.get("TZ")
    if tz is not None:
        query += f"&tz={quote(tz)}"
    # The Host header as urllib sends it: the URL's, without a default port.
    netloc = split.netloc[: -len(":80")] if split.netloc.endswith(":80") else split.netloc
    path = split.path.rstrip("/") + "/api/status.txt?" + query
    head = f"GET {path} HTTP/1.1\r\nHost: {netloc}\r\nConnection: close\r\nAccept-Encoding: identity\r\n\r\n"
    return head.encode("ascii"), host, port


def _text(answer: bytes) -> tuple[str, bool] | None:
    """(text, healthy) from the daemon's answer; None unless it is the text, whole."""
    head, _sep, body = answer.partition(b"\r\n\r\n")
    status, *fields = head.split(b"\r\n")
    if status[9:13] != b"200 " or not status.startswith(b"HTTP/1."):
        return None
    headers = {}
    for field in fields:
        name, _colon, value = field.partition(b":")
        headers[name.strip().lower()] = value.strip()
    healthy = headers.get(b"x-punchgate-healthy")
    length = headers.get(b"content-length")
    if healthy not in (b"yes", b"no") or b"transfer-encoding" in headers:
        return None
    if length is None or not length.isdigit() or int(length) != len(body):
        return None
    try:
        return body.decode(), healthy == b"yes"
    except UnicodeDecodeError:
        return None


def _connect(host: str, port: int) -> socket.socket:
    """socket.create_connection's loop, with the host as bytes: getaddrinfo imports the idna
    codec (some 5 ms) for a str."""
    error: OSError = OSError(f"no address for {host}")
    for family, kind, proto, _name, address in socket.getaddrinfo(
        host.encode("ascii"), port, type=socket.SOCK_STREAM
    ):
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(TIMEOUT)
            sock.connect(address)
        except OSError as exc:
            sock.close()
            error = exc
        else:
            return sock
    raise error


def show_plain(base_url: str) -> int | None:
    """Write the daemon's text and return the exit code (0 healthy, 1 not, 2 no answer in
    time); None when `status_cli.show_status` must render (see the module docstring)."""
    width = plain_width()
    if width is None or not MIN_WIDTH <= width < WIDE:
        return None
    request = _request(base_url, width)
    if request is None:
        return None
    head, host, port = request
    chunks, size = [], 0
    try:
        with _connect(host, port) as sock:
            sock.sendall(head)
            while chunk := sock.recv(1 << 16):
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_BODY:
                    return None
    except TimeoutError as exc:  # asking again would double the wait
        from punchgate.gateway.status_cli import unreachable

        return unreachable(base_url, exc)
    except OSError:  # refused, no such host…: status_cli says so, in its words
        return None
    answer = _text(b"".join(chunks))
    if answer is None:
        return None
    sys.stdout.write(answer[0])
    sys.stdout.flush()
    return 0 if answer[1] else 1
