"""The buffer's exceptions (re-exported by `punchgate.sync.store`, where callers import them).

`StoreError` means the file cannot be used at all; `StoreRefusedError` and its subclasses mean
the buffer works but refuses new punches for now (the terminals keep them), and carry the
fault code the gateway raises for it.
"""

from __future__ import annotations

from collections.abc import Sequence

from punchgate.sync.faults import GatewayFault


class StoreError(Exception):
    """The buffer cannot be used (bad file, schema from the future, not WAL-capable)."""


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
