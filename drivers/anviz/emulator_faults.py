"""What goes wrong on an emulated Anviz terminal's line, and how each fault changes the bytes.

Kept apart from the terminal's state and its command handlers so that one place says which
faults exist, what they count against, and in which order they apply to a reply.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Noise with a start byte in it, so that resynchronisation is exercised, not just skipping.
NOISE = bytes.fromhex("00ff13a5000000")


def _hits(every: int, count: int) -> bool:
    return every > 0 and count % every == 0


@dataclass(slots=True)
class Faults:
    """What goes wrong. `*_every = n` hits every n-th reply (or request); 0 turns it off."""

    silent: bool = False  # answer nothing at all: unplugged, powered off, wrong device id
    crc_error_every: int = 0  # send the reply with a broken CRC
    noise_every: int = 0  # send line noise before the reply
    bad_length_every: int = 0  # send the reply with a LEN field that does not match its data
    drop_every: int = 0  # ignore the request, as if it was lost on the line
    # carry out the next request with one of these commands, then lose its reply on the line
    lose_reply_to: set[int] = field(default_factory=set)
    replies: int = 0  # counters that the `*_every` settings count against
    requests: int = 0

    def drops_request(self) -> bool:
        """Count a request addressed to this terminal; True when it goes unheard."""
        self.requests += 1
        return self.silent or _hits(self.drop_every, self.requests)

    def loses_reply(self, command: int) -> bool:
        """True (once per armed command) when the reply to a carried-out request is lost."""
        if command in self.lose_reply_to:
            self.lose_reply_to.discard(command)
            return True
        return False

    def damage(self, reply: bytes) -> list[bytes]:
        """Count a reply going out and return the bytes the line carries instead of it."""
        self.replies += 1
        if _hits(self.crc_error_every, self.replies):
            reply = reply[:-2] + bytes([reply[-2] ^ 0x5A, reply[-1]])
        if _hits(self.bad_length_every, self.replies):
            length = int.from_bytes(reply[7:9], "big") + 3
            reply = reply[:7] + length.to_bytes(2, "big") + reply[9:]
        if _hits(self.noise_every, self.replies):
            return [NOISE + reply]
        return [reply]
