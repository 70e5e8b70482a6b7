"""What makes a SIP trunk or dispatch rule unsafe: pure rules over LiveKit's own objects.

`kaiwa sip apply` refuses a file that breaks them, `kaiwa sip check` reports every object in
LiveKit that does, and /healthz reports an open dispatch rule. Why each rule exists (read in
livekit/protocol sip/sip.go and livekit/sip pkg/sip/inbound.go, see docs/phone.md):

- A call that matches no trunk is accepted without a digest challenge, and every dispatch
  rule with no trunk applies to it: such a rule gives anyone who can reach the SIP port a
  room and an agent.
- A trunk with neither an address list nor credentials lets in whoever dials its numbers.
- livekit matches each `allowed_addresses` entry against the packet's source address and
  also, as a literal string, against the host in the caller's From header: a bare
  `203.0.113.5` is passed by any INVITE whose From says `@203.0.113.5`. An entry in CIDR
  form can never equal a host string. A hostname is only ever such a string.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Literal

from livekit import api as lkapi

# The widest network an address entry may name: a provider's signalling range, not a cloud.
MAX_IPV4_PREFIX_BITS = 24
MAX_IPV6_PREFIX_BITS = 48
# Digest over MD5 is guessed offline from one captured exchange: the password must be long.
MIN_AUTH_PASSWORD_CHARS = 16

# Objects Kaiwa made carry this in their `metadata` (JSON); only those are ever pruned.
MANAGED_BY_KEY = "managed_by"
MANAGER = "kaiwa"

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Finding:
    """One problem with one object. `error`s fail `kaiwa sip check`; `warning`s do not."""

    severity: Severity
    code: str
    subject: str
    message: str

    def __str__(self) -> str:
        return f"{self.severity}: {self.subject}: {self.message} [{self.code}]"


def managed_metadata(**extra: object) -> str:
    """The metadata of an object Kaiwa makes."""
    return json.dumps({MANAGED_BY_KEY: MANAGER, **extra})


def is_managed(metadata: str) -> bool:
    try:
        parsed = json.loads(metadata or "{}")
    except ValueError:
        return False
    return isinstance(parsed, dict) and parsed.get(MANAGED_BY_KEY) == MANAGER


def trunk_label(trunk: lkapi.SIPInboundTrunkInfo) -> str:
    return f'trunk "{trunk.name}"' + (f" ({trunk.sip_trunk_id})" if trunk.sip_trunk_id else "")


def rule_label(rule: lkapi.SIPDispatchRuleInfo) -> str:
    ident = rule.sip_dispatch_rule_id
    return f'rule "{rule.name}"' + (f" ({ident})" if ident else "")


def address_problem(entry: str) -> tuple[str, str] | None:
    """(code, message) when an `allowed_addresses` entry is unsafe, else None."""
    if "/" not in entry:
        try:
            ipaddress.ip_address(entry)
        except ValueError:
            return (
                "address_hostname",
                f"{entry!r} is a hostname, which livekit compares with the From header's "
                "host: anyone can write it there. Give the provider's addresses in CIDR form",
            )
        return (
            "address_without_prefix",
            f"{entry!r} has no prefix length: livekit also passes any INVITE whose From host "
            f"is this literal text. Write {entry}/{32 if ':' not in entry else 128}",
        )
    try:
        network = ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return ("address_hostname", f"{entry!r} is not an address in CIDR form")
    widest = MAX_IPV4_PREFIX_BITS if network.version == 4 else MAX_IPV6_PREFIX_BITS
    if network.prefixlen < widest:
        return (
            "address_too_wide",
            f"{entry!r} is wider than /{widest}: name the provider's signalling addresses",
        )
    return None


def has_credentials(trunk: lkapi.SIPInboundTrunkInfo) -> bool:
    return bool(trunk.auth_username and trunk.auth_password)


def trunk_findings(trunk: lkapi.SIPInboundTrunkInfo) -> list[Finding]:
    """The problems of one trunk on its own."""
    subject = trunk_label(trunk)
    found: list[Finding] = []

    def error(code: str, message: str) -> None:
        found.append(Finding("error", code, subject, message))

    if not trunk.allowed_addresses and not has_credentials(trunk):
        error(
            "open_trunk",
            "neither allowed_addresses nor digest credentials: anyone who dials its numbers "
            "is let in",
        )
    if bool(trunk.auth_username) != bool(trunk.auth_password):
        error(
            "incomplete_credentials",
            "auth_username and auth_password go together: with one of them, no caller is "
            "challenged",
        )
    if trunk.auth_password and len(trunk.auth_password) < MIN_AUTH_PASSWORD_CHARS:
        # The password itself is never named, not even its length.
        error(
            "short_password",
            f"the auth password is shorter than {MIN_AUTH_PASSWORD_CHARS} characters",
        )
    for entry in trunk.allowed_addresses:
        problem = address_problem(entry)
        if problem:
            error(*problem)
    return found


def rule_findings(
    rule: lkapi.SIPDispatchRuleInfo,
    trunk_ids: Collection[str],
    own_numbers: Collection[str] = (),
) -> list[Finding]:
    """The problems of one rule, given the trunks that exist and the numbers they answer."""
    subject = rule_label(rule)
    found: list[Finding] = []
    if not rule.trunk_ids:
        found.append(
            Finding(
                "error",
                "open_rule",
                subject,
                "no trunk: it applies to calls that match no trunk, which are accepted "
                "without a digest challenge; anyone who reaches the SIP port gets a room and "
                "an agent",
            )
        )
    for missing in sorted(set(rule.trunk_ids) - set(trunk_ids)):
        found.append(
            Finding("error", "unknown_trunk", subject, f"names trunk {missing}, which is gone")
        )
    if rule.rule.WhichOneof("rule") == "dispatch_rule_individual" and not rule.hide_phone_number:
        found.append(
            Finding(
                "error",
                "individual_shows_number",
                subject,
                "an individual rule names each room after the caller's number: set "
                "hide_phone_number",
            )
        )
    mistaken = sorted(set(rule.inbound_numbers) & set(own_numbers))
    if mistaken:
        found.append(
            Finding(
                "warning",
                "inbound_is_own_number",
                subject,
                f"inbound_numbers holds the trunks' own numbers {mistaken}: inbound_numbers "
                "are the callers' numbers; the numbers called go in numbers",
            )
        )
    return found


def default_trunk_findings(trunks: Iterable[lkapi.SIPInboundTrunkInfo]) -> list[Finding]:
    """Two trunks with no numbers: each is the default trunk, and which one a call matches
    is not defined."""
    defaults = [trunk for trunk in trunks if not trunk.numbers]
    if len(defaults) < 2:
        return []
    return [
        Finding(
            "error",
            "default_trunk_conflict",
            ", ".join(trunk_label(t) for t in defaults),
            "more than one trunk has no numbers: each is a default trunk, and which one a "
            "call matches is not defined",
        )
    ]


def audit(
    trunks: Iterable[lkapi.SIPInboundTrunkInfo], rules: Iterable[lkapi.SIPDispatchRuleInfo]
) -> list[Finding]:
    """Every problem of a set of inbound trunks and dispatch rules, errors first."""
    trunks, rules = list(trunks), list(rules)
    found = [f for trunk in trunks for f in trunk_findings(trunk)]
    found += default_trunk_findings(trunks)
    ids = {trunk.sip_trunk_id for trunk in trunks}
    own_numbers = {number for trunk in trunks for number in trunk.numbers}
    found += [f for rule in rules for f in rule_findings(rule, ids, own_numbers)]
    return sorted(found, key=lambda f: f.severity != "error")


def open_rules(rules: Iterable[lkapi.SIPDispatchRuleInfo]) -> list[lkapi.SIPDispatchRuleInfo]:
    """Rules with no trunk (see `rule_findings`): what /healthz reports."""
    return [rule for rule in rules if not rule.trunk_ids]
