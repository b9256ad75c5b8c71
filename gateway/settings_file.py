"""Reading the config file: its TOML (with line-and-column messages) and the files it names on this machine."""

from __future__ import annotations

import os
import re
import stat
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from punchgate.gateway.settings_errors import NESTED_TOO_DEEPLY, ConfigError

if TYPE_CHECKING:
    from punchgate.gateway.settings import Settings

MAX_CONFIG_BYTES = 1 << 20  # a real config is a few KB; anything near this is the wrong file


def _toml_problem(exc: tomllib.TOMLDecodeError) -> str:
    text = str(exc)
    where = re.fullmatch(r"(.*) \(at line (\d+), column (\d+)\)", text, re.DOTALL)
    if where:
        what, place = where[1], f"at line {where[2]}, column {where[3]}"
    else:
        what, place = text.removesuffix(" (at end of document)"), "at the end of the file"
    hint = ""
    if what.startswith("Invalid value"):
        hint = ' (strings need quotes, host = "192.0.2.10"; numbers and true/false do not)'
    elif what.startswith("Expected newline"):
        hint = ' (a string missing its quotes? host = "10.0.0.5", not host = 10.0.0.5)'
    elif what == "Illegal character '\\n'":
        hint = " (a string left open: close its quotes on the same line)"
    elif "twice" in what or "overwrite" in what:
        hint = " (a key or table is written twice; each terminal goes under its own [[terminals]])"
    return f"(file): not valid TOML {place}: {what[:1].lower()}{what[1:]}{hint}"


def _utf8_problem(raw: bytes, exc: UnicodeDecodeError) -> str:
    line_start = raw.rfind(b"\n", 0, exc.start) + 1
    line = raw.count(b"\n", 0, exc.start) + 1
    column = len(raw[line_start : exc.start].decode("utf-8", "replace")) + 1
    return (
        f"(file): not UTF-8 text at line {line}, column {column} (byte 0x{raw[exc.start]:02x}): "
        "save the file as UTF-8"
    )


def read_toml(path: Path) -> dict[str, Any]:
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            raise ConfigError(path, ["(file): not a regular file: give the path of the TOML config file"])
        with path.open("rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(path, [f"(file): cannot read: {reason}"]) from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(
            path, ["(file): larger than 1 MB: a punchgate config is a few KB; is this the right file?"]
        )
    raw = raw.removeprefix(b"\xef\xbb\xbf")  # a byte order mark, as some Windows editors save
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(path, [_utf8_problem(raw, exc)]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, [_toml_problem(exc)]) from None
    except RecursionError:
        raise ConfigError(path, [NESTED_TOO_DEEPLY]) from None


def _unreadable(path: Path) -> str | None:
    """Why the service could not read the file at `path`, or None if it can."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        where = (
            "" if path.is_absolute() else " (a relative path counts from the directory punchgate starts in)"
        )
        return f"{path} does not exist: check the path{where}"
    except (OSError, ValueError) as exc:
        return f"cannot read {path}: {exc.strerror if isinstance(exc, OSError) else exc}"
    if stat.S_ISDIR(mode):
        return f"{path} is a directory: name the file inside it"
    if not stat.S_ISREG(mode):
        return f"{path} is not a regular file"
    try:
        with path.open("rb") as handle:
            empty = not handle.read(1)
    except PermissionError:
        return (
            f"cannot read {path}: permission denied for uid {os.geteuid()}: "
            "give the user punchgate runs as read access"
        )
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror}"
    return f"{path} is empty" if empty else None


def file_problems(settings: Settings) -> list[str]:
    """Files the settings name that this machine must have: the TLS certificate and keys."""
    problems = [  # the push listener's HTTPS files
        f"push.{key}: {problem}"
        for key in ("tls_cert_file", "tls_key_file")
        if (file := getattr(settings.push, key)) is not None and (problem := _unreadable(file))
    ]
    tls = settings.mqtt.tls
    if tls is None:
        return problems
    for key in ("ca_file", "cert_file", "key_file"):
        path: Path | None = getattr(tls, key)
        problem = _unreadable(path) if path is not None else None
        if problem:
            problems.append(f"mqtt.tls.{key}: {problem}")
    return problems
