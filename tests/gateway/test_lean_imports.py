"""`punchgate run` imports structlog without rich (gateway/lean_imports.py); nothing else changes."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _run(code: str) -> str:
    """`code` in a fresh interpreter (the modules it imports are the point); its stdout."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_daemon_command_imports_neither_rich_nor_pygments() -> None:
    out = _run(
        """
        import sys
        sys.argv = ["punchgate", "run", "--config", "x.toml"]
        import punchgate.gateway.cli, punchgate.gateway.app, punchgate.gateway.logs
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("rich", "pygments")))
        """
    )
    assert out.strip() == "[]"


def test_rich_still_imports_afterwards_and_the_console_log_renders_exceptions() -> None:
    out = _run(
        """
        import io, sys
        sys.argv = ["punchgate", "run"]
        import punchgate.gateway.cli
        import structlog
        from punchgate.gateway.logs import configure_logging

        import rich.console  # the console and the status text still find rich
        print(rich.console.Console.__name__)
        stream = io.StringIO()
        configure_logging("info", stream=stream, json=False)
        try:
            raise ValueError("boom")
        except ValueError:
            structlog.get_logger("t").exception("failed")
        print("Traceback" in stream.getvalue() and "ValueError: boom" in stream.getvalue())
        """
    )
    assert out.split() == ["Console", "True"]


def test_other_commands_import_structlog_as_before() -> None:
    out = _run(
        """
        import sys
        sys.argv = ["punchgate", "status"]
        import punchgate.gateway.cli
        import structlog.dev
        print(structlog.dev.rich is not None)
        """
    )
    assert out.strip() == "True"


def test_too_late_changes_nothing() -> None:
    out = _run(
        """
        import structlog
        from punchgate.gateway.lean_imports import import_structlog_without_rich
        print(import_structlog_without_rich(), structlog.dev.rich is not None)
        """
    )
    assert out.split() == ["False", "True"]
