"""What `punchgate run` imports without needing it (issue 18: the idle daemon's memory).

structlog imports `rich` (and through it pygments) when it is installed, only to offer rich
tracebacks: `structlog.dev` builds its default exception formatter from it and
`structlog.tracebacks` renders locals with it. The gateway never uses either: both of
`gateway.logs`' renderers name their formatter (`plain_traceback`) or render JSON, and
nothing calls `structlog.tracebacks`. Yet that import costs the daemon about 5 MiB of RSS
(80 modules, 0.9 MB of bytecode) for as long as it runs.

`import_structlog_without_rich` imports structlog once with `rich` hidden, then shows it again:
structlog then holds its own fallbacks (`plain_traceback` as its default formatter, plain
`repr` for locals), and any later `import rich` (the console, the status text the HTTP API
renders on request) finds rich as before, and fails where it did when rich is missing.
`punchgate run` calls it before anything imports structlog; the other commands import as
they always did (`punchgate status` prints through rich anyway).
"""

from __future__ import annotations

import sys


def import_structlog_without_rich() -> bool:
    """Import structlog with `rich` hidden from it; whether it did (False: too late, structlog
    or rich is imported already, and nothing changes)."""
    if "structlog" in sys.modules or "rich" in sys.modules:
        return False
    # None in sys.modules makes `import rich` raise ModuleNotFoundError, which structlog's
    # optional imports catch (`except ImportError`).
    sys.modules["rich"] = None  # type: ignore[assignment]
    try:
        import structlog  # noqa: F401  (imported for its side effect: the modules above)
    finally:
        del sys.modules["rich"]
    return True
