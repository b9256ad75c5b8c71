"""How much the driver accepts from a ZK terminal: counts, reply sizes and data-set sizes.

A terminal's own claims (the counts in GET_FREE_SIZES, the sizes it announces before a bulk
transfer, the envelope lengths on TCP) decide nothing on their own: every one is checked
against a cap derived from the protocol's maxima and the terminal's declared capacity, and
the capacity itself is bounded by a hard ceiling. So the most the driver ever holds for one
read is `table_cap(...)`, whatever a terminal says, and the time it allows grows with
counts that passed `check_count`, never with a raw claim.

Pure functions, no sockets: the driver checks counts here, `link` and `bulk_read` check
sizes on the wire.
"""

from __future__ import annotations

from typing import Final

from punchgate.drivers.zk.errors import CountBeyondCapacity

# Hard ceilings, whatever a terminal declares: well above the capacities terminals declare
# (the emulator's profiles, modelled on them, say 50,000 to 200,000 records and 500 to 10,000
# users). Punchgate's choice, not a protocol limit.
MAX_RECORDS: Final = 1_000_000
MAX_USERS: Final = 200_000

# The largest record layouts the codec knows (docs/protocols/zk.md, section 7).
MAX_ATTENDANCE_RECORD: Final = 49
MAX_USER_RECORD: Final = 72
DATA_SET_HEADER: Final = 4  # every data set starts with its u32 byte count

# One command's reply (everything but a table read): the longest seen are a few hundred bytes
# (GET_FREE_SIZES 112, options, firmware text); live events are under 64.
MAX_REPLY_BYTES: Final = 64 * 1024


def check_count(what: str, claimed: int, capacity: int, ceiling: int) -> int:
    """`claimed` when it is possible for this terminal, else CountBeyondCapacity.

    A count above the terminal's declared capacity (when it declares one) or above the hard
    ceiling cannot be real: nothing is read on its strength.
    """
    if claimed < 0:
        raise CountBeyondCapacity(f"the terminal claims {claimed} {what}")
    if capacity > 0 and claimed > capacity:
        raise CountBeyondCapacity(
            f"the terminal claims {claimed} {what}, beyond its declared capacity of {capacity}"
        )
    if claimed > ceiling:
        raise CountBeyondCapacity(
            f"the terminal claims {claimed} {what}, beyond the {ceiling} the driver accepts"
        )
    return claimed


def table_cap(capacity: int, ceiling: int, record_size: int) -> int:
    """The most bytes a data set may hold: the declared capacity (bounded by the ceiling;
    the ceiling when none is declared) times the largest record, plus the byte count."""
    records = min(capacity, ceiling) if capacity > 0 else ceiling
    return DATA_SET_HEADER + records * record_size
