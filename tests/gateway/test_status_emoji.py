"""`status_cli._holds_emoji` (word by word, remembered) answers exactly as rich's own emoji
replacement over the whole text would: random texts of codes, near-codes, variants, colons in
times and every kind of whitespace."""

from __future__ import annotations

import random

from rich._emoji_replace import _emoji_replace

from punchgate.gateway.status_cli import _holds_emoji

PIECES = [
    "a",
    ":",
    "smile",
    ":smile:",
    "-emoji",
    "-text",
    " ",
    "\u3000",
    "\t",
    "9",
    "x",
    "thumbs_up",
    "_",
    "19:09:55",
]


def test_holds_emoji_agrees_with_rich_on_random_texts() -> None:
    rng = random.Random(7)
    replaced = 0
    for _ in range(50_000):
        text = "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 14)))
        expected = _emoji_replace(text) != text
        replaced += expected
        assert _holds_emoji(text) == expected, repr(text)
    assert 1_000 < replaced < 49_000  # both answers were exercised
