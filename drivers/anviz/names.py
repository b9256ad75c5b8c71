"""The contract's names for an Anviz terminal's punch-state and verify-type codes."""

from __future__ import annotations

from collections.abc import Mapping

from punchgate.drivers.base import COMMON_STATE_NAMES

STATE_NAMES: Mapping[int, str] = COMMON_STATE_NAMES
VERIFY_NAMES: Mapping[int, str] = {
    1: "fingerprint",
    2: "password",
    3: "card",
    4: "face",
    5: "fingerprint_card",
}
