"""The contract's names for a push terminal's punch-state and verify-type codes.

Push firmware reports the same codes as the pull protocol (ATTLOG's status and verify columns
are the record's state and verify type), so the names are the same as the ZK family's. They
are written out here because driver families do not import each other.
"""

from __future__ import annotations

from collections.abc import Mapping

from punchgate.drivers.base import COMMON_STATE_NAMES

STATE_NAMES: Mapping[int, str] = COMMON_STATE_NAMES
# 3 and 4 are the older firmware's codes for password and card.
VERIFY_NAMES: Mapping[int, str] = {
    0: "password",
    1: "fingerprint",
    2: "card",
    3: "password",
    4: "card",
    15: "face",
    25: "palm",
}
