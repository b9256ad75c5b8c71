"""The buffer's exceptions (re-exported by `punchgate.sync.store`, where callers import them).

`StoreError` means the file cannot be used at all; `StoreRefusedError` and its subclasses mean
the buffer works but refuses new punches for now (the terminals keep them), and carry the
fault code the gateway raises for it. `BufferRefusedError` means the file is damaged, missing
or not this gateway's, and the gateway must not start on it: starting would either begin a
fresh, empty buffer (losing every pending punch without a word) or fail the same way at every
restart. A person has to look (`punchgate buffer check`, `punchgate buffer recover`).
"""

from __future__ import annotations

from collections.abc import Sequence

from punchgate.sync.faults import GatewayFault


class StoreError(Exception):
    """The buffer cannot be used (bad file, schema from the future, not WAL-capable)."""


REMEDY = (
    "nothing was changed; see `punchgate buffer check` for details and "
    "`punchgate buffer recover` to salvage what is readable into a new file"
)


class BufferRefusedError(StoreError):
    """The buffer file must not be used as it is. `problem` is a short stable code (`empty`,
    `missing`, `not_sqlite`, `truncated`, `corrupt`, `older_copy`, `other_gateway`,
    `replaced`, `no_identity`, `locked`); `detail` says what is wrong in one sentence and
    `remedy` what to do. `str()` is both, for one log line."""

    def __init__(self, path: object, problem: str, detail: str, remedy: str = REMEDY) -> None:
        super().__init__(f"buffer {path} refused ({problem}): {detail}; {remedy}")
        self.path = path
        self.problem = problem
        self.detail = detail
        self.remedy = remedy


class BufferLockedError(BufferRefusedError):
    """Another process (a running daemon, or `punchgate buffer recover`) holds the buffer."""

    def __init__(self, path: object, detail: str, remedy: str) -> None:
        super().__init__(path, "locked", detail, remedy)


class StoreRefusedError(StoreError):
    """New punches are refused. `fault` is the code; `stored` lists the ids of the call's
    punches that did fit under the limit and were stored before the refusal (oldest first)."""

    fault = GatewayFault.BUFFER_FULL

    def __init__(self, message: str, *, stored: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.stored = list(stored)


class BufferFullError(StoreRefusedError):
    fault = GatewayFault.BUFFER_FULL


class DiskLowError(StoreRefusedError):
    fault = GatewayFault.DISK_LOW
