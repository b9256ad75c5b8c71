"""The console's colours meet WCAG AA contrast (4.5:1) for the text they carry."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

CSS = (Path(__file__).resolve().parents[2] / "gateway" / "console" / "static" / "console.css").read_text()
VARIABLES = dict(re.findall(r"--([a-z-]+):\s*(#[0-9a-f]{6})", CSS))


def _luminance(colour: str) -> float:
    def channel(value: int) -> float:
        c = value / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)


def contrast(a: str, b: str) -> float:
    high, low = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


@pytest.mark.parametrize(
    ("text", "background"),
    [
        ("ink", "paper"),
        ("muted", "paper"),
        ("muted", "soft"),
        ("link", "paper"),
        ("good", "good-bg"),
        ("good", "paper"),
        ("warn", "warn-bg"),
        ("bad", "bad-bg"),
        ("bad", "paper"),
        ("ink", "warn-bg"),
        ("ink", "bad-bg"),
        ("muted", "bad-bg"),
        ("muted", "warn-bg"),
    ],
)
def test_text_colours_have_aa_contrast(text: str, background: str) -> None:
    ratio = contrast(VARIABLES[text], VARIABLES[background])
    assert ratio >= 4.5, f"--{text} on --{background}: {ratio:.2f}:1"


def test_the_header_is_white_on_dark_blue() -> None:
    assert contrast("#ffffff", "#14213d") >= 4.5
