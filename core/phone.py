"""A phone caller's number is personal data: the form lists, transcripts and exports show.

LiveKit's SIP bridge names a phone caller's participant `sip_<number>` (or `sip_<hex>` when
its dispatch rule hides the number) and `Phone <number>`. Only a conversation's detail shows
the number whole; everywhere else it is masked by `mask_phone_number`:

- A number that starts with `+` keeps the `+` and its country code (E.164 codes are
  prefix-free, so the code is told by `_TWO_DIGIT_CODES` below: 1 and 7 are one digit, the
  listed ones two, every other three).
- The last 4 digits are shown only when at least 4 digits before them stay hidden (after the
  country code); otherwise every digit is hidden. Numbers of 4 digits or fewer are hidden
  whole, country code included.
- Each hidden digit is a bullet (•), in groups of 4 from the right; separators in the input
  (spaces, dashes, dots, brackets) are dropped.

    +819012345678  ->  +81 •• ••••5678
    +14155550123   ->  +1 •• ••••0123
    09012345678    ->  ••• ••••5678
    +3541234567    ->  +354 ••• ••••
    110            ->  •••
"""

from __future__ import annotations

import re

SIP_IDENTITY_PREFIX = "sip_"
BULLET = "•"
SHOWN_TAIL = 4

# E.164 country codes of two digits; 1 and 7 are one digit, all others three.
_TWO_DIGIT_CODES = frozenset(
    "20 27 30 31 32 33 34 36 39 40 41 43 44 45 46 47 48 49 51 52 53 54 55 56 57 58 "
    "60 61 62 63 64 65 66 81 82 84 86 90 91 92 93 94 95 98".split()
)
# A number as written: an optional `+` and `(`, then digits and separators, a digit at each end.
_NUMBER = re.compile(r"\+?\(?\d(?:[\d ().-]*\d)?")


def _country_code(digits: str) -> str:
    if digits[:1] in ("1", "7"):
        return digits[:1]
    if digits[:2] in _TWO_DIGIT_CODES:
        return digits[:2]
    return digits[:3]


def _bullets(count: int) -> str:
    """`count` bullets in groups of 4 from the right: 6 -> '•• ••••'."""
    head = count % 4
    groups = ([BULLET * head] if head else []) + [BULLET * 4] * (count // 4)
    return " ".join(groups)


def is_phone_number(text: str) -> bool:
    """Whether `text` is a number as written (`+`, digits, separators), and nothing else."""
    return _NUMBER.fullmatch(text) is not None


def mask_phone_number(number: str) -> str:
    """The number as lists show it: `+819012345678` -> `+81 •• ••••5678` (module docstring)."""
    digits = "".join(c for c in number if c.isdigit())
    plus = "+" if number.lstrip().startswith("+") else ""
    if len(digits) <= SHOWN_TAIL:
        return plus + _bullets(len(digits))
    code = _country_code(digits) if plus else ""
    rest = digits[len(code) :]
    prefix = f"{plus}{code} " if code else plus
    if len(rest) < 2 * SHOWN_TAIL:
        return prefix + _bullets(len(rest))
    return prefix + _bullets(len(rest) - SHOWN_TAIL) + rest[-SHOWN_TAIL:]


def mask_identity(identity: str) -> str:
    """`sip_<number>` with the number masked; any other identity, a hashed `sip_<hex>`
    included, as it is. `sip_` is reserved (core/protocol.py): no browser caller has it."""
    if not identity.startswith(SIP_IDENTITY_PREFIX):
        return identity
    rest = identity[len(SIP_IDENTITY_PREFIX) :]
    return SIP_IDENTITY_PREFIX + mask_phone_number(rest) if is_phone_number(rest) else identity


def mask_name(name: str) -> str:
    """Every number in a phone caller's name masked: `Phone +819012345678` ->
    `Phone +81 •• ••••5678`. Only for SIP participants: other names are people's own."""
    return _NUMBER.sub(lambda m: mask_phone_number(m.group()), name)
