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


# Letters of other scripts drawn like the Latin ones of the platform's name ("Каiwa" with a
# Cyrillic К and а): a name is compared with these folded to Latin.
_LOOKALIKES = str.maketrans(
    {"а": "a", "α": "a", "і": "i", "ι": "i", "ı": "i", "к": "k", "κ": "k", "ԝ": "w", "ѡ": "w"}
)


def name_words(name: str) -> list[str]:
    """A name as a reader sees its words: compatibility forms folded ("Ｋａｉｗａ"), invisible
    format characters dropped ("Kai\u200bwa"), case and look-alike letters folded, split
    on everything but letters and digits."""
    folded = unicodedata.normalize("NFKC", name)
    folded = "".join(ch for ch in folded if unicodedata.category(ch) != "Cf")
    folded = folded.casefold().translate(_LOOKALIKES)
    words, word = [], ""
    for ch in folded:
        if ch.isalnum():
            word += ch
        elif word:
            words.append(word)
            word = ""
    return [*words, word] if word else words


def poses_as(name: str, reserved: str) -> bool:
    """Whether a display name reads as `reserved` or starts with it as a word ("KAIWA",
    "Kai\u200bwa", "Kaiwa (agent)"), but not a name that merely contains it ("Nakaiwa")."""
    words = name_words(name)
    target = name_words(reserved)
    return bool(words) and (words[: len(target)] == target or "".join(words) == "".join(target))
