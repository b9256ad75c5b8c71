"""The receiver's HTTP answers: short plain text, the only kind push terminals read.

`ok` is what a handled request gets (`OK`, or `OK: <n>` after an upload); `refuse` is the error
a handler raises, one sentence saying what was wrong, so a person reading a capture or the
gateway's log knows what to fix on the terminal.
"""

from __future__ import annotations

from aiohttp import web

TEXT = "text/plain"


def ok(text: str = "OK") -> web.Response:
    return web.Response(text=text, content_type=TEXT)


def refuse(status: int, sentence: str) -> web.HTTPException:
    kinds: dict[int, type[web.HTTPException]] = {
        400: web.HTTPBadRequest,
        403: web.HTTPForbidden,
        503: web.HTTPServiceUnavailable,
    }
    return kinds[status](text=sentence + "\n", content_type=TEXT)
