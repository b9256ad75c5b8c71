"""The two exceptions every ZK codec raises for input that does not follow the protocol.

They live apart from the codecs so framing, time and record modules can all raise them
without importing each other. Both carry the offending bytes, shown in hex in the message,
so callers can log them and carry on.
"""

from __future__ import annotations


class ZkFrameError(ValueError):
    """A frame, record or payload that does not follow the protocol."""

    def __init__(self, message: str, raw: bytes = b"") -> None:
        self.raw = bytes(raw)
        suffix = f" (raw={self.raw.hex()})" if raw else ""
        super().__init__(message + suffix)


class ZkChecksumError(ZkFrameError):
    """A packet whose checksum field does not match its bytes."""
