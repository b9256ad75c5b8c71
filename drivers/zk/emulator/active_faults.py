"""The faults switched on in one terminal right now, with their parameters.

Only bookkeeping: what switching a fault on or off does lives in `fault_effects`, and the
catalogue of fault names in `faults`. `saved` keeps the values a fault replaced (clock
offset, record capacity) until the fault is cleared.
"""

from __future__ import annotations

from typing import Any


class ActiveFaults:
    """Fault name -> its parameters, for every fault currently on."""

    def __init__(self) -> None:
        self._active: dict[str, dict[str, Any]] = {}
        self.saved: dict[str, Any] = {}  # what a fault replaced, restored on clear

    def __contains__(self, name: object) -> bool:
        return name in self._active

    def params(self, name: str) -> dict[str, Any] | None:
        """The parameters of fault `name`, or None when it is off."""
        return self._active.get(name)

    def switch_on(self, name: str, params: dict[str, Any]) -> None:
        self._active[name] = params

    def switch_off(self, name: str) -> None:
        del self._active[name]

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """A copy of every active fault and its parameters."""
        return {name: dict(params) for name, params in self._active.items()}

    def use_counted(self, name: str) -> bool:
        """True when a fault with an optional `count` applies to this reply (and spends one)."""
        params = self._active.get(name)
        if params is None:
            return False
        count = params.get("count")
        if count is not None:
            if count <= 1:
                del self._active[name]
            else:
                params["count"] = count - 1
        return True
