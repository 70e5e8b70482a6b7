"""Caller tokens carry one exact room, the least grants and a short life."""

from __future__ import annotations

import json
import time

import jwt
import pytest
from pydantic import ValidationError

from agents.stt.whisper_model import WHISPER_LANGUAGES
from api.settings import Settings
from api.tokens import (
    RejoinRefused,
    ReservedIdentityError,
    TokenRequest,
    UnknownScenarioError,
    mint_caller_token,
    read_rejoin_ticket,
    rejoining,
)
from core.languages import SUPPORTED_LANGUAGES

pytestmark = pytest.mark.unit

SETTINGS = Settings(livekit_api_key="key", livekit_api_secret="s" * 40, token_ttl_s=300)


def claims_of(token: str) -> dict[str, object]:
    decoded: dict[str, object] = jwt.decode(token, "s" * 40, algorithms=["HS256"], issuer="key")
    return decoded


def test_token_grants_only_joining_the_exact_room() -> None:
    minted = mint_caller_token(SETTINGS, TokenRequest(name="Aiko", room="room-a", language="ja"))
    video = claims_of(minted.token)["video"]
    assert isinstance(video, dict)
    assert video["roomJoin"] is True
    assert video["room"] == "room-a"
    assert video["canPublishSources"] == ["microphone"]
    # Typed messages; captions are taken from agents only (web/src/main.js).
    assert video["canPublishData"] is True
    for forbidden in (
        "roomAdmin",
        "roomCreate",
        "roomList",
        "roomRecord",
        "hidden",
        "agent",
        "recorder",
        "ingressAdmin",
        "destinationRoom",
        # Attributes have one writer, the API: a caller could otherwise pose as an agent.
        "canUpdateOwnMetadata",
    ):
        assert not video.get(forbidden), forbidden
    claims = claims_of(minted.token)
    sip = claims.get("sip")
    assert sip is None or (isinstance(sip, dict) and not any(sip.values()))


def test_token_is_short_lived() -> None:
    minted = mint_caller_token(SETTINGS, TokenRequest(name="Aiko"))
    claims = claims_of(minted.token)
    assert isinstance(claims["exp"], int)
    assert claims["exp"] - time.time() <= 300 + 2


def test_token_carries_language_mode_and_dispatches_the_agent() -> None:
    minted = mint_caller_token(
        SETTINGS, TokenRequest(name="Aiko", mode="interpret", language="ja", room="r1")
    )
    claims = claims_of(minted.token)
    assert claims["attributes"] == {"language": "ja", "kaiwa.mode": "interpret"}
    room_config = claims["roomConfig"]
    assert isinstance(room_config, dict)
    (dispatch,) = room_config["agents"]
    assert dispatch["agentName"] == "kaiwa"
    assert json.loads(dispatch["metadata"])["mode"] == "interpret"


def test_new_room_and_identity_are_generated_when_omitted() -> None:
    first = mint_caller_token(SETTINGS, TokenRequest(name="A", mode="dialog"))
    second = mint_caller_token(SETTINGS, TokenRequest(name="A", mode="dialog"))
    assert first.room.startswith("dialog-") and first.room != second.room
    assert first.identity != second.identity


@pytest.mark.parametrize(
    "field,value",
    [
        ("room", "../etc"),
        ("room", "a" * 65),
        ("room", "room a"),
        ("identity", "x/y"),
        ("language", "english"),
        ("mode", "admin"),
        ("name", ""),
    ],
)
def test_invalid_requests_are_refused(field: str, value: str) -> None:
    with pytest.raises(ValidationError):
        TokenRequest.model_validate({"name": "A", field: value})


@pytest.mark.parametrize("identity", ["agent-AJ_x", "kaiwa-recorder", "recorder-1", "sip_15550100"])
def test_platform_identities_are_reserved(identity: str) -> None:
    with pytest.raises(ReservedIdentityError):
        mint_caller_token(SETTINGS, TokenRequest(name="A", identity=identity))


def test_a_known_scenario_is_carried_to_the_agent_and_an_unknown_one_refused() -> None:
    minted = mint_caller_token(SETTINGS, TokenRequest(name="Aiko", scenario="cafe-ja-beginner"))
    room_config = claims_of(minted.token)["roomConfig"]
    assert isinstance(room_config, dict)
    (dispatch,) = room_config["agents"]
    assert json.loads(dispatch["metadata"])["scenario"] == "cafe-ja-beginner"
    with pytest.raises(UnknownScenarioError):
        mint_caller_token(SETTINGS, TokenRequest(name="Aiko", scenario="no-such-scenario"))


def test_the_ticket_proves_one_identity_in_one_room() -> None:
    minted = mint_caller_token(SETTINGS, TokenRequest(name="Aiko", room="r1"))
    assert read_rejoin_ticket(SETTINGS, minted.rejoin) == ("r1", minted.identity)
    back = TokenRequest(name="Aiko", room="r1", identity=minted.identity, rejoin=minted.rejoin)
    rejoin = rejoining(SETTINGS, back)
    assert rejoin is not None and rejoin.room == "r1" and rejoin.young
    assert rejoining(SETTINGS, TokenRequest(name="Aiko", room="r1")) is None
    # A rejoin keeps its ticket: never renewed.
    assert mint_caller_token(SETTINGS, back, rejoin=rejoin).rejoin == minted.rejoin
    for forged in (
        back.model_copy(update={"rejoin": None}),
        back.model_copy(update={"room": "r2"}),
        back.model_copy(update={"identity": "caller-someone-else"}),
        back.model_copy(update={"rejoin": minted.token}),  # a LiveKit token is no ticket
        back.model_copy(update={"rejoin": minted.rejoin[:-2] + "xx"}),
    ):
        with pytest.raises(RejoinRefused):
            rejoining(SETTINGS, forged)
    other = Settings(livekit_api_key="key", livekit_api_secret="t" * 40)
    with pytest.raises(RejoinRefused):
        read_rejoin_ticket(other, minted.rejoin)


def test_the_ticket_opens_no_livekit_room() -> None:
    minted = mint_caller_token(SETTINGS, TokenRequest(name="Aiko", room="r1"))
    claims = jwt.decode(
        minted.rejoin, "s" * 40, algorithms=["HS256"], audience="kaiwa-rejoin", issuer="key"
    )
    assert "video" not in claims and "kaiwa" not in claims


def test_supported_languages_are_the_speech_to_texts() -> None:
    assert SUPPORTED_LANGUAGES == WHISPER_LANGUAGES
    with pytest.raises(ValidationError):
        TokenRequest(name="A", language="xx")
    assert TokenRequest(name="A", language="pt-BR").language == "pt-BR"


@pytest.mark.parametrize(
    "name",
    [
        "Kaiwa",
        "kaiwa",
        " KAIWA ",
        "Kai\u200bwa",
        "Ｋａｉｗａ",
        "Kaiwa (agent)",
        "Каiwa",
        "K.a.i.w.a",
    ],
)
def test_no_caller_is_named_as_the_agent(name: str) -> None:
    """Every page labels the agent "Kaiwa": a caller of that name could speak as it."""
    with pytest.raises(ValidationError, match="agent"):
        TokenRequest(name=name)


@pytest.mark.parametrize("name", ["Nakaiwa", "Kai", "Aiko Kaiwara", "会話"])
def test_names_that_only_resemble_the_agents_are_taken(name: str) -> None:
    assert TokenRequest(name=name).name == name
