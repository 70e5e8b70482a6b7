"""`kaiwa sip apply` and `kaiwa sip check`: phone trunks and dispatch rules in LiveKit, safely.

LiveKit refuses duplicates and looks nothing up by name, so `apply` lists what exists, matches
Kaiwa's objects by name and changes only what differs. The file is checked whole before the
first call to LiveKit; the rules it is checked against are core/sip_policy.py's, the same
that `check` and /healthz apply to whatever is in LiveKit. docs/phone.md describes the file.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, TypeVar

from google.protobuf.duration_pb2 import Duration
from livekit import api as lkapi
from livekit.api.sip_service import SipService
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from api.settings import Settings as ApiSettings
from core import scenarios
from core.errors import KaiwaError
from core.languages import LANGUAGE_TAG_PATTERN, Language
from core.protocol import Mode
from core.rooms import caller_attributes, room_configuration
from core.sip_policy import (
    Finding,
    audit,
    default_trunk_findings,
    has_credentials,
    is_managed,
    managed_metadata,
    rule_findings,
    rule_label,
    trunk_findings,
    trunk_label,
)

Say = Callable[[str], None]

# LiveKit rings for up to 3 minutes while the agent is not in the room yet; a caller hears
# ringing all that time. An agent that has not answered in 15 s is not coming.
DEFAULT_RINGING_TIMEOUT_S = 15

E164 = Annotated[str, StringConstraints(pattern=r"^\+[1-9][0-9]{1,14}$")]
Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


class SipCliSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")

    kaiwa_sip_listen_ip: str = Field(
        default="127.0.0.1",
        description="The address the SIP bridge listens on for signalling; "
        "`kaiwa sip apply --allow-open` accepts an open trunk only when it is loopback.",
    )
    scenarios_file: Path = Field(
        default=scenarios.DEFAULT_FILE, description="The scenarios a rule may name."
    )


class SipRefused(KaiwaError, ValueError):
    """The file, or the objects in LiveKit it meets, would make an unsafe or ambiguous setup."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(problems))


class TrunkSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    numbers: list[E164] = []
    allowed_addresses: list[str] = []
    allowed_numbers: list[E164] = []
    auth_username: str = ""
    auth_password: str = ""
    # The name of an environment variable holding the password, so the file holds no secret.
    auth_password_env: str = ""
    ringing_timeout_s: int = Field(default=DEFAULT_RINGING_TIMEOUT_S, ge=1, le=180)
    # 0: LiveKit's default.
    max_call_duration_s: int = Field(default=0, ge=0, le=24 * 3600)


class RuleSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    trunks: list[Name] = []
    numbers: list[E164] = []
    inbound_numbers: list[E164] = []
    room_naming: Literal["callee", "individual"] = "callee"
    room_prefix: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,31}$")] = (
        "phone"
    )
    hide_phone_number: bool = False
    mode: Mode = "dialog"
    scenario: str | None = None
    language: Language = "en"
    record: bool = True
    max_participants: int = Field(
        default=ApiSettings.model_fields["room_max_participants"].default, ge=3, le=1000
    )
    # 0: LiveKit's default (20 s).
    departure_timeout_s: int = Field(default=0, ge=0, le=3600)


class SipFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    trunk: list[TrunkSpec] = []
    rule: list[RuleSpec] = []


@dataclass
class Desired:
    """What the file asks for, as LiveKit's objects; rules name their trunks by name until
    the trunks' ids are known."""

    trunks: list[lkapi.SIPInboundTrunkInfo]
    rules: list[tuple[lkapi.SIPDispatchRuleInfo, list[str]]]
    # What is allowed but likely a mistake (core/sip_policy.py's warnings).
    warnings: list[str]


def read_file(path: Path) -> SipFile:
    try:
        return SipFile.model_validate(tomllib.loads(path.read_text(encoding="utf-8")))
    except OSError as exc:
        raise SipRefused([f"cannot read {path}: {exc.strerror}"]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise SipRefused([f"{path} is not valid TOML: {exc}"]) from exc
    except ValidationError as exc:
        raise SipRefused(
            [
                f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
                for err in exc.errors(include_url=False, include_input=False)
            ]
        ) from exc


def desired_trunk(spec: TrunkSpec, password: str) -> lkapi.SIPInboundTrunkInfo:
    trunk = lkapi.SIPInboundTrunkInfo(
        name=spec.name,
        metadata=managed_metadata(),
        numbers=spec.numbers,
        allowed_addresses=spec.allowed_addresses,
        allowed_numbers=spec.allowed_numbers,
        auth_username=spec.auth_username,
        auth_password=password,
    )
    trunk.ringing_timeout.FromSeconds(spec.ringing_timeout_s)
    if spec.max_call_duration_s:
        trunk.max_call_duration.FromSeconds(spec.max_call_duration_s)
    return trunk


def desired_rule(spec: RuleSpec) -> lkapi.SIPDispatchRuleInfo:
    if spec.room_naming == "individual":
        naming = lkapi.SIPDispatchRule(
            dispatch_rule_individual=lkapi.SIPDispatchRuleIndividual(room_prefix=spec.room_prefix)
        )
    else:
        # Always randomized: without it every call to one number joins one room.
        naming = lkapi.SIPDispatchRule(
            dispatch_rule_callee=lkapi.SIPDispatchRuleCallee(
                room_prefix=spec.room_prefix, randomize=True
            )
        )
    return lkapi.SIPDispatchRuleInfo(
        name=spec.name,
        # LiveKit gives a rule's metadata to the caller's participant: the call's session,
        # as a browser caller's token carries it, plus Kaiwa's mark.
        metadata=managed_metadata(mode=spec.mode, scenario=spec.scenario),
        rule=naming,
        numbers=spec.numbers,
        inbound_numbers=spec.inbound_numbers,
        hide_phone_number=spec.hide_phone_number,
        attributes=caller_attributes(spec.mode, spec.language),
        room_config=room_configuration(
            mode=spec.mode,
            scenario=spec.scenario,
            record=spec.record,
            max_participants=spec.max_participants,
            departure_timeout_s=spec.departure_timeout_s,
        ),
    )


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


def validate(
    parsed: SipFile,
    *,
    allow_open: bool,
    settings: SipCliSettings,
    environ: Mapping[str, str],
) -> Desired:
    """The file as LiveKit objects, or SipRefused naming every problem at once."""
    problems: list[str] = []
    for kind, names in (
        ("trunk", [t.name for t in parsed.trunk]),
        ("rule", [r.name for r in parsed.rule]),
    ):
        problems += [
            f"two {kind}s are named {n!r}" for n in sorted(set(names)) if names.count(n) > 1
        ]

    trunks = []
    for spec in parsed.trunk:
        password = spec.auth_password
        if spec.auth_password and spec.auth_password_env:
            problems.append(f"trunk {spec.name!r}: auth_password and auth_password_env both set")
        elif spec.auth_password_env:
            password = environ.get(spec.auth_password_env, "")
            if not password:
                problems.append(
                    f"trunk {spec.name!r}: environment variable {spec.auth_password_env} "
                    "(auth_password_env) is not set"
                )
                continue
        trunks.append(desired_trunk(spec, password))

    catalogue = scenarios.load(settings.scenarios_file)
    known = {t.name for t in parsed.trunk}
    rules = []
    for rule_spec in parsed.rule:
        if rule_spec.scenario is not None:
            if rule_spec.mode != "dialog":
                problems.append(f"rule {rule_spec.name!r}: a scenario is for dialog calls")
            elif rule_spec.scenario not in catalogue:
                problems.append(f"rule {rule_spec.name!r}: no scenario {rule_spec.scenario!r}")
        for name in rule_spec.trunks:
            if name not in known:
                problems.append(f"rule {rule_spec.name!r}: no trunk named {name!r} in the file")
        rules.append((desired_rule(rule_spec), list(rule_spec.trunks)))

    # The policy's own rules, on the file's objects (rules name their trunks by name here).
    own_numbers = {number for trunk in trunks for number in trunk.numbers}
    findings = [f for trunk in trunks for f in trunk_findings(trunk)]
    findings += default_trunk_findings(trunks)
    for rule, names in rules:
        view = lkapi.SIPDispatchRuleInfo()
        view.CopyFrom(rule)
        view.trunk_ids[:] = names
        findings += rule_findings(view, known, own_numbers)
    warnings = []
    for finding in findings:
        if finding.severity != "error":
            warnings.append(f"{finding.subject}: {finding.message}")
            continue
        if finding.code == "unknown_trunk":
            continue  # reported above, by name
        if finding.code == "open_trunk" and allow_open:
            if _loopback(settings.kaiwa_sip_listen_ip):
                continue
            problems.append(
                f"{finding.subject}: --allow-open needs the SIP bridge to listen on loopback "
                f"only, and KAIWA_SIP_LISTEN_IP is {settings.kaiwa_sip_listen_ip}"
            )
            continue
        hint = (
            " (or --allow-open, on a loopback-only bridge)" if finding.code == "open_trunk" else ""
        )
        problems.append(f"{finding.subject}: {finding.message}{hint}")
    if problems:
        raise SipRefused(problems)
    return Desired(trunks=trunks, rules=rules, warnings=warnings)


_Named = TypeVar("_Named", lkapi.SIPInboundTrunkInfo, lkapi.SIPDispatchRuleInfo)

# What apply compares, per kind: the fields Kaiwa sets. Others (headers, media encryption...)
# are left as they are until a compared field changes, when the whole object is replaced.
TRUNK_FIELDS = (
    "numbers",
    "allowed_addresses",
    "allowed_numbers",
    "auth_username",
    "auth_password",
    "ringing_timeout",
    "max_call_duration",
    "metadata",
)
RULE_FIELDS = (
    "trunk_ids",
    "numbers",
    "inbound_numbers",
    "hide_phone_number",
    "rule",
    "attributes",
    "room_config",
    "metadata",
)


def differing(existing: _Named, wanted: _Named, fields: Sequence[str]) -> list[str]:
    def value(obj: object, name: str) -> object:
        got = getattr(obj, name)
        if name in ("trunk_ids", "numbers", "inbound_numbers", "allowed_addresses"):
            return sorted(got)
        if name == "attributes":
            return dict(got)
        return got

    return [name for name in fields if value(existing, name) != value(wanted, name)]


def _match(
    wanted_names: Sequence[str], existing: Sequence[_Named], label: Callable[[_Named], str]
) -> tuple[dict[str, _Named], list[str]]:
    """Existing Kaiwa objects by name, and the problems that make a match ambiguous."""
    found: dict[str, _Named] = {}
    problems = []
    for name in wanted_names:
        same = [o for o in existing if o.name == name]
        if not same:
            continue
        if len(same) > 1:
            problems.append(
                f"{len(same)} objects in LiveKit are named {name!r} "
                f"({', '.join(label(o) for o in same)}): delete all but one"
            )
        elif not is_managed(same[0].metadata):
            problems.append(
                f"{label(same[0])} exists but was not made by Kaiwa: rename it in the file, "
                "or delete it in LiveKit"
            )
        else:
            found[name] = same[0]
    return found, problems


async def apply(sip: SipService, desired: Desired, *, prune: bool, say: Say) -> list[str]:
    """Make LiveKit hold what `desired` says; the changes made, one line each."""
    trunks = list((await sip.list_inbound_trunk(lkapi.ListSIPInboundTrunkRequest())).items)
    rules = list((await sip.list_dispatch_rule(lkapi.ListSIPDispatchRuleRequest())).items)
    old_trunks, problems = _match([t.name for t in desired.trunks], trunks, trunk_label)
    old_rules, more = _match([r.name for r, _ in desired.rules], rules, rule_label)
    if problems + more:
        raise SipRefused(problems + more)
    changes: list[str] = []

    def changed(line: str) -> None:
        changes.append(line)
        say(line)

    ids: dict[str, str] = {}
    for wanted in desired.trunks:
        old = old_trunks.get(wanted.name)
        if old is None:
            made = await sip.create_inbound_trunk(lkapi.CreateSIPInboundTrunkRequest(trunk=wanted))
            ids[wanted.name] = made.sip_trunk_id
            changed(f"created {trunk_label(made)}")
            continue
        ids[wanted.name] = old.sip_trunk_id
        fields = differing(old, wanted, TRUNK_FIELDS)
        if fields:
            # Replaced whole: update_inbound_trunk_fields cannot set the timeouts.
            await sip.update_inbound_trunk(old.sip_trunk_id, wanted)
            changed(f"updated {trunk_label(old)}: {', '.join(fields)}")

    for wanted_rule, names in desired.rules:
        wanted_rule.trunk_ids[:] = [ids[name] for name in names]
        old_rule = old_rules.get(wanted_rule.name)
        if old_rule is None:
            made_rule = await sip.create_dispatch_rule(
                lkapi.CreateSIPDispatchRuleRequest(dispatch_rule=wanted_rule)
            )
            changed(f"created {rule_label(made_rule)}")
            continue
        fields = differing(old_rule, wanted_rule, RULE_FIELDS)
        if fields:
            # Replaced whole: SIPDispatchRuleUpdate has no room_config.
            await sip.update_dispatch_rule(old_rule.sip_dispatch_rule_id, wanted_rule)
            changed(f"updated {rule_label(old_rule)}: {', '.join(fields)}")

    if prune:
        # Rules first: a rule must never outlive the trunk it was tied to (it would then
        # name a trunk that is gone).
        keep_rules = {r.name for r, _ in desired.rules}
        for rule in rules:
            if is_managed(rule.metadata) and rule.name not in keep_rules:
                await sip.delete_dispatch_rule(
                    lkapi.DeleteSIPDispatchRuleRequest(
                        sip_dispatch_rule_id=rule.sip_dispatch_rule_id
                    )
                )
                changed(f"deleted {rule_label(rule)}")
        keep_trunks = {t.name for t in desired.trunks}
        for trunk in trunks:
            if is_managed(trunk.metadata) and trunk.name not in keep_trunks:
                await sip.delete_trunk(lkapi.DeleteSIPTrunkRequest(sip_trunk_id=trunk.sip_trunk_id))
                changed(f"deleted {trunk_label(trunk)}")
    return changes


def describe_trunk(trunk: lkapi.SIPInboundTrunkInfo) -> str:
    """One line; never the password."""
    auth = f"digest user {trunk.auth_username!r}" if has_credentials(trunk) else "no digest"
    return (
        f"{trunk_label(trunk)}: numbers {list(trunk.numbers) or 'any (default trunk)'}, "
        f"addresses {list(trunk.allowed_addresses) or 'any'}, "
        f"callers {list(trunk.allowed_numbers) or 'any'}, {auth}"
        + (", Kaiwa's" if is_managed(trunk.metadata) else "")
    )


def describe_rule(rule: lkapi.SIPDispatchRuleInfo) -> str:
    naming = rule.rule.WhichOneof("rule") or "none"
    agents = [a.agent_name for a in rule.room_config.agents]
    return (
        f"{rule_label(rule)}: trunks {list(rule.trunk_ids) or 'NONE'}, "
        f"numbers {list(rule.numbers) or 'any'}, callers {list(rule.inbound_numbers) or 'any'}, "
        f"{naming.removeprefix('dispatch_rule_')} rooms, agents {agents or 'none'}"
        + (", Kaiwa's" if is_managed(rule.metadata) else "")
    )


async def check(sip: SipService, say: Say) -> list[Finding]:
    """Print every trunk and rule in LiveKit, and every problem found; the problems."""
    trunks = list((await sip.list_inbound_trunk(lkapi.ListSIPInboundTrunkRequest())).items)
    rules = list((await sip.list_dispatch_rule(lkapi.ListSIPDispatchRuleRequest())).items)
    say(f"{len(trunks)} inbound trunks")
    for trunk in trunks:
        say(f"  {describe_trunk(trunk)}")
    say(f"{len(rules)} dispatch rules")
    for rule in rules:
        say(f"  {describe_rule(rule)}")
    findings = audit(trunks, rules)
    for finding in findings:
        say(str(finding))
    errors = sum(f.severity == "error" for f in findings)
    say(f"{errors} errors, {len(findings) - errors} warnings")
    return findings


# --- outbound calls ----------------------------------------------------------------------


class SipCallFailed(KaiwaError, RuntimeError):
    """The call could not be placed, or was not answered."""


async def call(
    livekit: lkapi.LiveKitAPI,
    number: str,
    *,
    trunk: str,
    mode: Mode = "dialog",
    scenario: str | None = None,
    language: Language = "en",
    record: bool = True,
    wait: bool = False,
    ringing_timeout_s: int = 30,
    max_call_duration_s: int = 0,
    say: Say,
) -> lkapi.SIPParticipantInfo:
    """Call `number` through the outbound trunk named `trunk`, into a new room with the agent.

    The room comes first, with the agent dispatched, as a browser caller's token makes it; the
    phone joins it once dialled, and the agent greets only once the phone has answered
    (`sip.callStatus` turns `active`), so the greeting is heard from its first word."""
    if not re.fullmatch(r"\+[1-9][0-9]{1,14}", number):
        raise SipCallFailed(f"{number!r} is not an E.164 number (+<country><number>)")
    if not re.fullmatch(LANGUAGE_TAG_PATTERN, language):
        raise SipCallFailed(f"{language!r} is not a supported language")
    if scenario is not None and scenario not in scenarios.load(SipCliSettings().scenarios_file):
        raise SipCallFailed(f"no scenario {scenario!r}; see GET /api/scenarios")
    listed = await livekit.sip.list_outbound_trunk(lkapi.ListSIPOutboundTrunkRequest())
    found = [t for t in listed.items if t.name == trunk]
    if len(found) != 1:
        names = sorted(t.name for t in listed.items)
        raise SipCallFailed(f"{len(found)} outbound trunks named {trunk!r}; there are {names}")
    config = room_configuration(mode=mode, scenario=scenario, record=record, max_participants=3)
    # No number in the room's name: lists show room names whole.
    room_name = f"phone-out_{secrets.token_hex(6)}"
    await livekit.room.create_room(
        lkapi.CreateRoomRequest(
            name=room_name,
            metadata=config.metadata,
            max_participants=config.max_participants,
            agents=list(config.agents),
        )
    )
    say(f"room {room_name}: calling through trunk {trunk}")
    request = lkapi.CreateSIPParticipantRequest(
        sip_trunk_id=found[0].sip_trunk_id,
        sip_call_to=number,
        room_name=room_name,
        participant_identity=f"sip_{number}",
        participant_name=f"Phone {number}",
        participant_attributes=caller_attributes(mode, language),
        wait_until_answered=wait,
        ringing_timeout=Duration(seconds=ringing_timeout_s),
        max_call_duration=Duration(seconds=max_call_duration_s),
    )
    try:
        # With `wait`, the SDK itself lets the request outlast the ringing.
        return await livekit.sip.create_sip_participant(request)
    except lkapi.SipCallError as exc:
        await livekit.room.delete_room(lkapi.DeleteRoomRequest(room=room_name))
        raise SipCallFailed(f"the call failed: {exc}") from exc
