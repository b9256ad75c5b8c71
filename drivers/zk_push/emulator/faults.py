"""The faults an emulated push terminal can be told to show, switchable while it runs.

Each one reproduces something a push receiver meets in the field (docs: zk-push.md). Switch
one on with `ZkPushEmulator.set_fault(name, **params)`, off with `clear_fault(name)`; from
outside the process, list them in the CLI's fault file and send SIGUSR1 (see
`parse_fault_file`). A fault that takes `times` switches itself off after affecting that many
posts; without it, it stays on until cleared.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal, get_args

FaultValue = int | float | bool | str

Fault = Literal[
    "garbage_lines",  # `count` (3) junk lines mixed into each ATTLOG upload
    "duplicate_uploads",  # an ATTLOG chunk is posted again, unchanged, after its `OK`
    "factory_reset",  # one-shot: log cleared, stamps back to 0, `OPLOG 22` queued, reboot
    "dead_battery",  # the clock restarts at 2000-01-01 00:00:00 (cleared: the clock is set right)
    "drop_mid_post",  # a data post is cut after `after_bytes` (half) of its body; no answer is read
    "slow_posts",  # data posts trickle `chunk_bytes` (16) bytes every `interval` (0.05) seconds
    "wrong_sn",  # every request carries `sn` (default: the real serial + "X") instead of the serial
    "heartbeat_flood",  # getrequest every `interval` (0.01) seconds instead of every Delay
]

FAULTS: Final[tuple[str, ...]] = get_args(Fault)
ONE_SHOT_FAULTS: Final = frozenset({"factory_reset"})

_ALLOWED_PARAMS: Final[dict[str, frozenset[str]]] = {
    "garbage_lines": frozenset({"count", "times"}),
    "duplicate_uploads": frozenset({"times"}),
    "factory_reset": frozenset(),
    "dead_battery": frozenset(),
    "drop_mid_post": frozenset({"after_bytes", "times"}),
    "slow_posts": frozenset({"chunk_bytes", "interval", "times"}),
    "wrong_sn": frozenset({"sn"}),
    "heartbeat_flood": frozenset({"interval"}),
}


def check_fault(name: str, params: dict[str, FaultValue]) -> None:
    """Raise ValueError for an unknown fault or parameter, naming what is allowed."""
    if name not in _ALLOWED_PARAMS:
        raise ValueError(f"unknown fault {name!r}; known: {', '.join(FAULTS)}")
    unknown = set(params) - _ALLOWED_PARAMS[name]
    if unknown:
        allowed = ", ".join(sorted(_ALLOWED_PARAMS[name])) or "none"
        raise ValueError(
            f"fault {name!r} takes no parameter {', '.join(sorted(unknown))} (allowed: {allowed})"
        )
    times = params.get("times")
    if times is not None and (not isinstance(times, int) or isinstance(times, bool) or times < 1):
        raise ValueError(f"fault {name!r}: times must be a whole number of at least 1, not {times!r}")


class ActiveFaults:
    """The faults switched on, with their parameters; `times` counts down as posts use them."""

    def __init__(self) -> None:
        self._on: dict[str, dict[str, FaultValue]] = {}

    def set(self, name: str, params: dict[str, FaultValue]) -> None:
        check_fault(name, params)
        self._on[name] = dict(params)

    def clear(self, name: str) -> bool:
        return self._on.pop(name, None) is not None

    def get(self, name: str) -> dict[str, FaultValue] | None:
        return self._on.get(name)

    def use(self, name: str) -> dict[str, FaultValue] | None:
        """The fault's parameters if it is on, counting one use against its `times`."""
        params = self._on.get(name)
        if params is None:
            return None
        times = params.get("times")
        if isinstance(times, int) and not isinstance(times, bool):
            if times <= 1:
                del self._on[name]
            else:
                params["times"] = times - 1
        return params

    def snapshot(self) -> dict[str, dict[str, FaultValue]]:
        return {name: dict(params) for name, params in self._on.items()}


def number(params: dict[str, FaultValue], key: str, default: float) -> float:
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key} must be a number, not {value!r}")
    return float(value)


def parse_value(text: str) -> FaultValue:
    """`true`/`false`, an int, a float, or else the text itself."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def parse_params(items: list[str]) -> dict[str, FaultValue]:
    params: dict[str, FaultValue] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{item!r}: expected key=value")
        params[key] = parse_value(value)
    return params


def parse_fault_spec(text: str) -> tuple[str, dict[str, FaultValue]]:
    """`name` or `name:key=value,key=value` (the CLI's --fault), checked."""
    name, _, rest = text.strip().partition(":")
    params = parse_params([p for p in rest.split(",") if p.strip()]) if rest else {}
    check_fault(name, params)
    return name, params


@dataclass(frozen=True, slots=True)
class FaultLine:
    serial: str | None  # None: every emulated terminal
    name: str
    params: dict[str, FaultValue]


def parse_fault_file(text: str) -> list[FaultLine]:
    """The fault file, one fault a line: `[@SERIAL] name [key=value ...]`; `#` starts a comment.

    The file states the complete set of faults: when it is read, the faults it names are
    switched on (with these parameters) and every other fault is switched off. One-shot faults
    (factory_reset) fire each time the file is read while they are listed. Raises ValueError
    naming the line for anything malformed, so a bad file changes nothing.
    """
    lines: list[FaultLine] = []
    for number_, raw in enumerate(text.splitlines(), start=1):
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        serial = None
        if words[0].startswith("@"):
            serial = words.pop(0)[1:]
            if not serial or not words:
                raise ValueError(f"line {number_}: expected '@SERIAL name [key=value ...]'")
        try:
            params = parse_params(words[1:])
            check_fault(words[0], params)
        except ValueError as exc:
            raise ValueError(f"line {number_}: {exc}") from None
        lines.append(FaultLine(serial, words[0], params))
    return lines
