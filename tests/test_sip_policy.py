"""The rules that make a SIP trunk or dispatch rule unsafe (core/sip_policy.py)."""

from __future__ import annotations

from typing import Any

import pytest
from livekit import api as lkapi

from core.sip_policy import (
    address_problem,
    audit,
    is_managed,
    managed_metadata,
    open_rules,
)

pytestmark = pytest.mark.unit

PASSWORD = "a-long-digest-password"


def trunk(
    ident: str = "ST_a", numbers: tuple[str, ...] = ("+81312345678",), **fields: Any
) -> lkapi.SIPInboundTrunkInfo:
    values: dict[str, Any] = {"allowed_addresses": ["203.0.113.5/32"], **fields}
    return lkapi.SIPInboundTrunkInfo(
        sip_trunk_id=ident, name=ident.lower(), numbers=list(numbers), **values
    )


def rule(trunk_ids: tuple[str, ...] = ("ST_a",), **fields: Any) -> lkapi.SIPDispatchRuleInfo:
    values: dict[str, Any] = {
        "rule": lkapi.SIPDispatchRule(
            dispatch_rule_callee=lkapi.SIPDispatchRuleCallee(room_prefix="phone", randomize=True)
        ),
        **fields,
    }
    return lkapi.SIPDispatchRuleInfo(
        sip_dispatch_rule_id="SDR_a", name="main", trunk_ids=list(trunk_ids), **values
    )


def codes(
    trunks: list[lkapi.SIPInboundTrunkInfo], rules: list[lkapi.SIPDispatchRuleInfo]
) -> set[str]:
    return {f.code for f in audit(trunks, rules)}


def test_a_trunk_with_cidr_addresses_and_a_rule_on_it_pass() -> None:
    assert audit([trunk()], [rule()]) == []


def test_a_rule_without_trunk_is_open() -> None:
    assert codes([trunk()], [rule(trunk_ids=())]) == {"open_rule"}
    assert [r.name for r in open_rules([rule(), rule(trunk_ids=())])] == ["main"]


@pytest.mark.parametrize(
    ("entry", "code"),
    [
        ("203.0.113.5", "address_without_prefix"),
        ("2001:db8::5", "address_without_prefix"),
        ("sip.provider.example", "address_hostname"),
        ("203.0.113.0/23", "address_too_wide"),
        ("0.0.0.0/0", "address_too_wide"),
        ("2001:db8::/32", "address_too_wide"),
        ("203.0.113.0/24", None),
        ("203.0.113.5/32", None),
        ("2001:db8::/48", None),
    ],
)
def test_address_entries(entry: str, code: str | None) -> None:
    problem = address_problem(entry)
    assert (problem[0] if problem else None) == code
    expected = set() if code is None else {code}
    assert codes([trunk(allowed_addresses=[entry])], [rule()]) == expected


def test_a_trunk_needs_addresses_or_credentials() -> None:
    assert codes([trunk(allowed_addresses=[])], [rule()]) == {"open_trunk"}
    with_digest = trunk(allowed_addresses=[], auth_username="kaiwa", auth_password=PASSWORD)
    assert codes([with_digest], [rule()]) == set()
    half = trunk(allowed_addresses=[], auth_username="kaiwa")
    assert codes([half], [rule()]) == {"open_trunk", "incomplete_credentials"}


def test_a_short_password_is_flagged_and_never_shown() -> None:
    findings = audit([trunk(auth_username="kaiwa", auth_password="short-secret")], [rule()])
    assert [f.code for f in findings] == ["short_password"]
    assert "short-secret" not in str(findings[0])


def test_two_default_trunks_conflict() -> None:
    trunks = [trunk("ST_a", numbers=()), trunk("ST_b", numbers=())]
    assert codes(trunks, [rule()]) == {"default_trunk_conflict"}
    assert codes([trunk("ST_a", numbers=()), trunk("ST_b")], [rule()]) == set()


def test_a_rule_naming_a_deleted_trunk() -> None:
    assert codes([trunk()], [rule(trunk_ids=("ST_a", "ST_gone"))]) == {"unknown_trunk"}


def test_an_individual_rule_must_hide_the_number() -> None:
    individual = lkapi.SIPDispatchRule(
        dispatch_rule_individual=lkapi.SIPDispatchRuleIndividual(room_prefix="phone")
    )
    assert codes([trunk()], [rule(rule=individual)]) == {"individual_shows_number"}
    assert codes([trunk()], [rule(rule=individual, hide_phone_number=True)]) == set()


def test_own_numbers_as_callers_is_a_warning() -> None:
    findings = audit([trunk()], [rule(inbound_numbers=["+81312345678"])])
    assert [(f.severity, f.code) for f in findings] == [("warning", "inbound_is_own_number")]


def test_errors_come_first() -> None:
    findings = audit([trunk()], [rule(inbound_numbers=["+81312345678"]), rule(trunk_ids=())])
    assert [f.severity for f in findings] == ["error", "warning"]


def test_managed_mark() -> None:
    assert is_managed(managed_metadata(mode="dialog"))
    assert not is_managed("")
    assert not is_managed("not json")
    assert not is_managed('{"managed_by": "someone"}')
