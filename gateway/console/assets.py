"""The console's own files: the Jinja2 environment over templates/ and the bytes of static/.

Both are loaded once per server (`punchgate.gateway.console.state.Console` builds them) from the
folders beside this module, which the wheel ships as package data. Autoescaping is on and
undefined names fail, so a terminal or user name can never become markup and a template that
asks for a value nobody passed is an error, not an empty string. Only the file types in
`STATIC_TYPES` are served; there is no front-end build and no CDN.
"""

from __future__ import annotations

from pathlib import Path

import jinja2
from markupsafe import Markup, escape

HERE = Path(__file__).parent
STATIC_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["code"] = code_spans
    return env


def code_spans(text: str) -> Markup:
    """`name` in a sentence (docs' markdown) as <code>name</code>; everything else escaped."""
    parts = str(text).split("`")
    out = [escape(part) if i % 2 == 0 else Markup("<code>%s</code>") % part for i, part in enumerate(parts)]
    return Markup("").join(out)


def static_files() -> dict[str, tuple[bytes, str]]:
    files = {}
    for path in sorted((HERE / "static").iterdir()):
        if path.suffix in STATIC_TYPES:
            files[path.name] = (path.read_bytes(), STATIC_TYPES[path.suffix])
    return files
