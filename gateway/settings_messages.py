"""What a bad value gets told: what was wrong, and what to write instead (one line per problem)."""

from __future__ import annotations

import difflib
import math
import re
from typing import Any

from pydantic import BaseModel

from punchgate.gateway.settings_keys import unknown_key
from punchgate.gateway.settings_terminals import TERMINAL_MODELS


def _num(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _scalar(value: Any) -> str | None:
    """A short scalar as the file would show it; None for anything else (never repr a big value)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and abs(value) < 10**30:
        return str(value)
    if isinstance(value, float):
        return _num(value)
    if isinstance(value, str) and len(value) <= 60:
        return value
    return None


def _parsed_number(value: Any) -> int | float | None:
    """The number a quoted value spells ("4370", " 1.5 ", "1_000"), if it spells a finite one."""
    if not isinstance(value, str) or len(value) > 40:
        return None
    text = value.strip().replace("_", "")
    for kind in (int, float):
        try:
            number: int | float = kind(text)
        except ValueError:
            continue
        return number if math.isfinite(number) else None
    return None


def _not_an_int(error: dict[str, Any]) -> str:
    value = error.get("input")
    if isinstance(value, bool):
        return "must be a whole number, not true or false"
    if isinstance(value, float) and value.is_integer():
        return f"write it as a whole number: {int(value)}"
    number = _parsed_number(value)
    if isinstance(number, int):
        return f"write it as a number: {number}"
    return "must be a whole number"


def _not_a_float(error: dict[str, Any]) -> str:
    value = error.get("input")
    if isinstance(value, bool):
        return "must be a number, not true or false"
    if _parsed_number(value) is not None:
        return f"write it as a number: {str(value).strip()}"
    return "must be a number"


_TRUE = ("true", "yes", "on", "1", "y", "enabled")
_FALSE = ("false", "no", "off", "0", "n", "disabled")


def _not_a_bool(error: dict[str, Any]) -> str:
    value = error.get("input")
    if isinstance(value, int) and value in (0, 1):
        return f"write it as {'true' if value else 'false'}"
    spelled = value.strip().lower() if isinstance(value, str) else None
    if spelled in _TRUE or spelled in _FALSE:
        return f"write it as {'true' if spelled in _TRUE else 'false'}, without quotes"
    return "must be true or false, without quotes"


def _not_a_string(error: dict[str, Any]) -> str:
    shown = _scalar(error.get("input"))
    return f'write it as a string: "{shown}"' if shown is not None else 'must be a string, in quotes: "..."'


def _not_a_choice(error: dict[str, Any]) -> str:
    expected = str((error.get("ctx") or {}).get("expected", ""))
    choices = re.findall(r"'([^']*)'", expected)
    value = error.get("input")
    shown = _scalar(value)
    if not isinstance(value, str) and shown in choices:
        return f'write it as a string: "{shown}"'
    if isinstance(value, str) and shown is not None:
        folded = {c.lower(): c for c in choices}
        close = difflib.get_close_matches(shown.lower(), list(folded), n=1, cutoff=0.6)
        match = folded.get(shown.strip().lower()) or (folded[close[0]] if close else None)
        if match:
            return f"must be {expected}; did you mean {match!r}?"
    return f"must be {expected}"


def _not_a_list(error: dict[str, Any]) -> str:
    if error["loc"] and error["loc"][-1] == "terminals":
        return "must be an array of tables: write each terminal under its own [[terminals]] (two brackets)"
    return "must be an array, in square brackets"


def _bounds(error: dict[str, Any]) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind in ("greater_than_equal", "less_than_equal") and "port" in str(error["loc"][-1]):
        return "must be 1..65535"
    symbol, key = {
        "greater_than_equal": (">=", "ge"),
        "less_than_equal": ("<=", "le"),
        "greater_than": (">", "gt"),
        "less_than": ("<", "lt"),
    }[kind]
    return f"must be {symbol} {_num(ctx.get(key))}"


def _tag_message(error: dict[str, Any]) -> str:
    expected = str((error.get("ctx") or {}).get("expected_tags"))
    entry = error.get("input")
    tag = entry.get("type") if isinstance(entry, dict) else None
    if not isinstance(tag, str):
        return f'`type` must be a string, in quotes: one of {expected} (e.g. type = "zk")'
    shown = _scalar(tag) or tag[:57] + "..."
    close = difflib.get_close_matches(tag.lower(), list(TERMINAL_MODELS), n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown terminal type {shown!r} (expected one of: {expected}){hint}"


_MESSAGES: dict[str, Any] = {
    "missing": lambda e: "required",
    "greater_than_equal": _bounds,
    "less_than_equal": _bounds,
    "greater_than": _bounds,
    "less_than": _bounds,
    "union_tag_invalid": _tag_message,
    "union_tag_not_found": lambda e: "missing 'type' (e.g. type = \"zk\")",
    "string_pattern_mismatch": lambda e: (
        "must be 1-64 letters, digits, '_', '.', '-' and start with a letter or digit"
    ),
    "value_error": lambda e: str((e.get("ctx") or {}).get("error", e["msg"])),
    "int_type": _not_an_int,
    "int_parsing": _not_an_int,
    "int_from_float": _not_an_int,
    "float_type": _not_a_float,
    "float_parsing": _not_a_float,
    "finite_number": lambda e: "must be a finite number (not nan or inf)",
    "bool_type": _not_a_bool,
    "bool_parsing": _not_a_bool,
    "string_type": _not_a_string,
    "literal_error": _not_a_choice,
    "list_type": _not_a_list,
    "time_type": lambda e: "write it as a time without quotes, e.g. 08:00:00",
    "date_type": lambda e: "write it as a date without quotes, e.g. 2024-12-25",
    "model_type": lambda e: "must be a table: a [section], or { key = value } inline",
    "model_attributes_type": lambda e: "must be a table: a [section], or { key = value } inline",
    "dict_type": lambda e: "must be a table: a [section], or { key = value } inline",
    "string_too_short": lambda e: "must not be empty",
    "path_type": lambda e: 'must be a file path, in quotes: "/etc/punchgate/…"',
}


def message(error: Any, root: type[BaseModel]) -> str:
    """What was wrong with one key, for pydantic's `error` in a file validated as `root`."""
    if error["type"] == "extra_forbidden":
        return unknown_key(error, root)
    handler = _MESSAGES.get(error["type"])
    return str(handler(error)) if handler else str(error["msg"]).lower()
