"""Checks across `[[terminals]]` entries: names (and their comm-key variables) and claims that collide.

Each check returns `(location, message)` pairs, locations within the terminals list, for
`config_problems`.
"""

from __future__ import annotations

from collections.abc import Sequence

from punchgate.drivers.config import Claim, TerminalConfig
from punchgate.gateway.secrets import comm_key_env_name

Loc = tuple[str | int, ...]


def name_problems(terminals: Sequence[TerminalConfig]) -> list[tuple[Loc, str]]:
    """Names used twice, and names whose comm-key variables collide (gate-north, GATE_NORTH).

    Locations are within the terminals list: `(3, "name")`.
    """
    by_variable: dict[str, int] = {}
    problems: list[tuple[Loc, str]] = []
    for i, terminal in enumerate(terminals):
        variable = comm_key_env_name(terminal.name)
        j = by_variable.setdefault(variable, i)
        if j == i:
            continue
        other = terminals[j].name
        if other == terminal.name:
            message = f"{other!r} is used twice (also terminals[{j}]): give every terminal its own name"
        else:
            message = (
                f"{terminal.name!r} and {other!r} (terminals[{j}]) differ only in case or in '-', '.', '_': "
                f"both would take their comm key from {variable}; rename one"
            )
        problems.append(((i, "name"), message))
    return problems


def claim_problems(terminals: Sequence[TerminalConfig]) -> list[tuple[Loc, str]]:
    """Enabled terminals that occupy the same address, or one bus device id, or one line differently."""
    holders: dict[str, tuple[int, Claim]] = {}
    problems: list[tuple[Loc, str]] = []
    for i, terminal in enumerate(terminals):
        if not terminal.enabled:
            continue  # a disabled entry is never opened, so it takes nothing from the others
        for claim in terminal.claims():
            j, first = holders.setdefault(claim.key, (i, claim))
            if j == i or (claim.terms is not None and claim.terms == first.terms):
                continue
            other = f"terminal {terminals[j].name!r} (terminals[{j}])"
            if claim.terms is not None and first.terms is not None:
                message = f"{claim.label} is used by {other} with {first.terms}, here with {claim.terms}: {claim.fix}"
            else:
                message = f"{claim.label} is also {other}: {claim.fix}"
            problems.append(((i, claim.field), message))
    return problems
