"""What the gateway knows about each remote command, in one table.

* `scope`: `terminal` (run by each target terminal's worker, so it serialises with reads),
  `buffer` (works on the punch buffer, per terminal; no terminal contact: punches.resend) or
  `gateway` (one answer for the gateway: gateway.status);
* `default`: in the `[commands] allow` list unless the config says otherwise (reads and
  punches.resend); `destructive`: what the issue calls destructive, never allowed by default;
* `repeatable`: safe to run again when the gateway died while it ran (after the restart it runs
  again); the others are answered `interrupted` instead, because nobody can tell whether they
  took effect (a restart, a clear);
* `method`: the driver method it needs (`punchgate.drivers.base.Administered`), whose absence or
  `cannot` entry answers `unsupported` without waiting for the terminal;
* `push`: what a zk-push terminal can do without its command queue: `buffer` commands,
  `device.info` from what the terminal last reported (when the [push] listener does not run),
  and `users.list`, always answered from the user list the terminal uploaded (its protocol has
  no command that reads users back);
* `queued`: what a zk-push terminal runs through the push command queue
  (`punchgate.gateway.commands.push`); the rest is `unsupported` there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from punchgate.sync.command_contract import COMMANDS

Scope = Literal["terminal", "buffer", "gateway"]


@dataclass(frozen=True, slots=True)
class CommandSpec:
    name: str
    scope: Scope
    default: bool = False
    destructive: bool = False
    repeatable: bool = True
    method: str | None = None
    push: bool = False
    queued: bool = False
    single_terminal: bool = False  # log.clear repeats one terminal's serial


CATALOGUE: dict[str, CommandSpec] = {
    spec.name: spec
    for spec in (
        CommandSpec("device.info", "terminal", default=True, push=True, queued=True),
        CommandSpec("device.read_now", "terminal", default=True, queued=True),
        CommandSpec("device.set_time", "terminal", queued=True),
        CommandSpec(
            "device.restart", "terminal", destructive=True, repeatable=False, method="restart", queued=True
        ),
        CommandSpec("device.enable", "terminal", method="set_enabled"),
        CommandSpec("device.disable", "terminal", destructive=True, method="set_enabled"),
        CommandSpec("punches.resend", "buffer", default=True, push=True),
        CommandSpec("users.list", "terminal", default=True, method="list_users", push=True),
        CommandSpec("users.upsert", "terminal", method="upsert_users", queued=True),
        CommandSpec("users.delete", "terminal", destructive=True, method="delete_users", queued=True),
        CommandSpec(
            "log.clear", "terminal", destructive=True, repeatable=False, single_terminal=True, queued=True
        ),
        CommandSpec("gateway.status", "gateway", default=True),
    )
}
assert tuple(CATALOGUE) == COMMANDS, "the catalogue lists the contract's commands, in its order"

DEFAULT_ALLOW = [name for name, spec in CATALOGUE.items() if spec.default]
DESTRUCTIVE = [name for name, spec in CATALOGUE.items() if spec.destructive]
