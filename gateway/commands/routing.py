"""Where a command's target can run: the kind of each terminal, and what its driver cannot do."""

from __future__ import annotations

from typing import TYPE_CHECKING

from punchgate.drivers.zk_push import is_push_terminal
from punchgate.gateway.commands.catalogue import CommandSpec
from punchgate.gateway.commands.intake import TerminalKind

if TYPE_CHECKING:
    from punchgate.gateway.app import Application
    from punchgate.gateway.worker import DeviceWorker


def terminal_kinds(app: Application) -> dict[str, TerminalKind]:
    """Each configured terminal's kind: disabled, push, or pull (read by a worker); others are absent."""
    kinds: dict[str, TerminalKind] = {}
    for terminal in app.settings.terminals:
        if not terminal.enabled:
            kinds[terminal.name] = "disabled"
        elif is_push_terminal(terminal):
            kinds[terminal.name] = "push"
        elif terminal.name in app.workers:
            kinds[terminal.name] = "pull"
    return kinds


def cannot_run(worker: DeviceWorker, spec: CommandSpec) -> str | None:
    """Why the worker's driver cannot do the command, or None when it can (or needs no driver)."""
    if spec.method is None:
        return None
    driver = worker.driver
    if not hasattr(driver, spec.method):
        return f"the {worker.driver_type} driver cannot do {spec.name}"
    reason = getattr(driver, "cannot", {}).get(spec.method)
    return None if reason is None else str(reason)
