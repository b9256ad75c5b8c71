"""Where a config problem is: pydantic's locations as key paths, and the key an unknown one meant."""

from __future__ import annotations

import difflib
from typing import Any, get_args

from pydantic import BaseModel

from punchgate.gateway.settings_collisions import Loc
from punchgate.gateway.settings_terminals import TERMINAL_MODELS


def key_path(loc: tuple[int | str, ...]) -> str:
    """Turn pydantic's location into `terminals[2].port`, dropping union tag segments."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in TERMINAL_MODELS and out.endswith("]"):
            continue  # the discriminated union adds the tag as a path segment
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in get_args(annotation):
        found += [m for m in _models_in(arg) if m not in found]
    return found


def _model_at(root: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    """The model whose keys live at `loc` below `root` (pydantic's location, union tags included)."""
    choices: list[type[BaseModel]] = [root]
    for part in loc:
        if isinstance(part, int):
            continue
        if len(choices) > 1:  # a union: pydantic puts the tag it chose into the location
            choices = [m for m in choices if m is TERMINAL_MODELS.get(part)]
            continue
        field = choices[0].model_fields.get(part) if choices else None
        if field is None:
            return None
        choices = _models_in(field.annotation)
    return choices[0] if len(choices) == 1 else None


def unknown_key(error: dict[str, Any], root: type[BaseModel]) -> str:
    """An unknown key, with the hint or the close key name the model at its place offers."""
    loc = error["loc"]
    key = loc[-1] if loc else None
    model = _model_at(root, loc[:-1])
    if not isinstance(key, str) or model is None:
        return "unknown key"
    hints: dict[str, str] = getattr(model, "key_hints", {})
    if key.lower() in hints:
        return f"unknown key; {hints[key.lower()]}"
    names = list(model.model_fields)
    folded = {name.lower(): name for name in names}
    close = difflib.get_close_matches(key.lower().replace("-", "_"), names, n=1, cutoff=0.6)
    match = folded.get(key.lower().replace("-", "_")) or (close[0] if close else None)
    return f"unknown key; did you mean `{match}`?" if match else "unknown key"
