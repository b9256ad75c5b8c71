"""YAML for the generated contract documents (docs/asyncapi.yaml), written without a YAML library.

Block style: strings plain where YAML cannot read them as anything else, literal blocks for
multi-line text, else in JSON's double quotes (JSON's escapes are YAML's too). Handles what a
JSON-like document holds: mappings, lists, strings, numbers, booleans and None.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

_PLAIN = re.compile(r"[A-Za-z$][A-Za-z0-9_./$ (),;'+=-]*(?<! )")
_RESERVED = frozenset({"y", "n", "yes", "no", "on", "off", "true", "false", "null"})
# Not printable in YAML, or a line break to it: escaped inside double quotes.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\ufeff\ud800-\udfff\ufffe\uffff]")


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    if isinstance(value, str):
        if _PLAIN.fullmatch(value) and value.lower() not in _RESERVED:
            return value
        quoted = json.dumps(value, ensure_ascii=False)
        return _UNSAFE.sub(lambda match: f"\\u{ord(match.group()):04x}", quoted)
    if value == {}:
        return "{}"
    if value == []:
        return "[]"
    raise TypeError(f"cannot write {type(value).__name__} as YAML")


def _block(value: Any) -> bool:
    """Whether `value` is text a literal block scalar (`|-`) holds exactly."""
    if not isinstance(value, str) or "\n" not in value:
        return False
    lines = value.split("\n")
    return (
        not value.endswith("\n")
        and lines[0][:1] not in ("", " ")  # what YAML readers keep of a block's first line
        and not _UNSAFE.search(value)
        and not any(char in value for char in "\r\t")
        and all(line.strip() or not line for line in lines)
    )


def _yaml(value: Any, indent: int) -> Iterator[str]:
    """The lines of a non-empty mapping or list, indented by `indent`."""
    pad = " " * indent
    items = value.items() if isinstance(value, dict) else ((None, item) for item in value)
    for key, item in items:
        head = f"{pad}{_scalar(str(key))}:" if isinstance(value, dict) else f"{pad}-"
        if isinstance(item, dict | list) and item:
            if isinstance(value, dict):  # a list under a key may sit at the key's indentation
                yield head
                yield from _yaml(item, indent + 2 if isinstance(item, dict) else indent)
            else:
                first, *rest = _yaml(item, indent + 2)
                yield f"{head} {first[indent + 2 :]}"
                yield from rest
        elif _block(item):
            yield f"{head} |-"
            yield from (f"{pad}  {line}" if line else "" for line in item.split("\n"))
        else:
            yield f"{head} {_scalar(item)}"


def to_yaml(value: dict[str, Any]) -> str:
    """A non-empty mapping of mappings, lists, strings, numbers, booleans and None as YAML."""
    return "\n".join(_yaml(value, 0)) + "\n"
