"""Text from outside, checked for what no person types: a lone surrogate (not Unicode at
all: it cannot be stored or encoded), control characters, and the bidirectional overrides
that make one name read as another."""

from __future__ import annotations

import unicodedata

BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def valid_unicode(value: str) -> str:
    if any(unicodedata.category(ch) == "Cs" for ch in value):
        raise ValueError("not valid Unicode (a lone surrogate)")
    return value


def plain_line(value: str) -> str:
    """One line a person typed, such as a display name."""
    valid_unicode(value)
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        raise ValueError("control characters are not allowed")
    if any(ch in BIDI_CONTROLS for ch in value):
        raise ValueError("bidirectional control characters are not allowed")
    return value
