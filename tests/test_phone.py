"""How a phone caller's number is masked (core/phone.py)."""

from __future__ import annotations

import pytest

from core.phone import is_phone_number, mask_identity, mask_name, mask_phone_number

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "number,masked",
    [
        ("+819012345678", "+81 •• ••••5678"),  # Japan: a two-digit country code
        ("+14155550123", "+1 •• ••••0123"),  # NANP: one digit
        ("+79161234567", "+7 •• ••••4567"),
        ("+353851234567", "+353 • ••••4567"),  # Ireland: three digits
        ("+6581234567", "+65 ••••4567"),  # 8 national digits: 4 hidden, 4 shown
        ("+3541234567", "+354 ••• ••••"),  # 7 national digits: too few to show any
        ("09012345678", "••• ••••5678"),  # no `+`: no country code can be told
        ("15550100", "••••0100"),
        ("+81 90-1234-5678", "+81 •• ••••5678"),  # separators dropped
        ("1234567", "••• ••••"),
        ("12345", "• ••••"),
        ("1234", "••••"),  # 4 digits or fewer: hidden whole
        ("+1234", "+••••"),
        ("110", "•••"),
    ],
)
def test_mask_phone_number(number: str, masked: str) -> None:
    assert mask_phone_number(number) == masked


def test_never_more_than_the_country_code_and_the_last_4_digits() -> None:
    for length in range(1, 16):
        digits = "".join(str((7 + i) % 10) for i in range(length))
        for number in (digits, "+" + digits):
            shown = "".join(c for c in mask_phone_number(number) if c.isdigit())
            assert len(shown) <= 3 + 4
            assert shown == "" or len(digits) - len(shown) >= 4, number


@pytest.mark.parametrize(
    "identity,masked",
    [
        ("sip_+819012345678", "sip_+81 •• ••••5678"),
        ("sip_819012345678", "sip_•••• ••••5678"),
        ("sip_0a1b2c3d4e5f6a7b", "sip_0a1b2c3d4e5f6a7b"),  # hashed by the dispatch rule
        ("sip_", "sip_"),
        ("caller-1", "caller-1"),
        ("caller-5550123456", "caller-5550123456"),  # a browser caller's own choice
        ("agent-AJ_1", "agent-AJ_1"),
    ],
)
def test_mask_identity(identity: str, masked: str) -> None:
    assert mask_identity(identity) == masked


@pytest.mark.parametrize(
    "name,masked",
    [
        ("Phone +819012345678", "Phone +81 •• ••••5678"),
        ("Phone (090) 1234-5678", "Phone ••• ••••5678"),
        ("Phone +1 (415) 555-0123", "Phone +1 •• ••••0123"),
        ("Phone", "Phone"),
    ],
)
def test_mask_name(name: str, masked: str) -> None:
    assert mask_name(name) == masked


def test_is_phone_number() -> None:
    assert is_phone_number("+819012345678") and is_phone_number("03-1234-5678")
    assert not is_phone_number("0a1b2c3d") and not is_phone_number("") and not is_phone_number("+")
