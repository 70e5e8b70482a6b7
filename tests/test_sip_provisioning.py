"""`kaiwa sip apply` and `kaiwa sip check` against a real livekit-server (with the Redis its
SIP store needs), and the SIP part of /healthz."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar
from unittest.mock import ANY

import pytest
from livekit import api as lkapi
from livekit.api.sip_service import SipService

from core.protocol import AGENT_NAME, LANGUAGE_ATTRIBUTE, MODE_ATTRIBUTE
from kaiwa.cli import main
from kaiwa.stack.config import StackConfig
from kaiwa.stack.services import ephemeral_config, livekit_service, redis_service

from .support.apiclient import api_settings, client_for

pytestmark = pytest.mark.integration

PASSWORD = "a-long-digest-password"
T = TypeVar("T")

TRUNK = """
[[trunk]]
name = "provider"
numbers = ["+81312345678"]
allowed_addresses = ["{address}"]
auth_username = "kaiwa"
auth_password_env = "TEST_SIP_PASSWORD"
"""
RULE = """
[[rule]]
name = "ja-dialog"
trunks = ["provider"]
numbers = ["+81312345678"]
mode = "dialog"
scenario = "assistant"
language = "ja"
max_participants = 4
"""


@pytest.fixture(scope="module")
def livekit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackConfig]:
    """Redis and livekit-server only, on free ports; `kaiwa` reaches them through LIVEKIT_*."""
    cfg = ephemeral_config(tmp_path_factory.mktemp("sip"), env_name="test")
    redis, server = redis_service(cfg), livekit_service(cfg)
    redis.start()
    try:
        redis.wait_ready()
        server.start()
        try:
            server.wait_ready()
            with pytest.MonkeyPatch.context() as env:
                env.setenv("LIVEKIT_URL", cfg.livekit_url)
                env.setenv("LIVEKIT_API_KEY", cfg.secrets.livekit_api_key)
                env.setenv("LIVEKIT_API_SECRET", cfg.secrets.livekit_api_secret)
                env.setenv("KAIWA_ENV", "test")
                env.setenv("TEST_SIP_PASSWORD", PASSWORD)
                yield cfg
        finally:
            server.stop()
    finally:
        redis.stop()


def sip(cfg: StackConfig, call: Callable[[SipService], Awaitable[T]]) -> T:
    """One call through livekit-api, as an operator would make it outside Kaiwa."""

    async def run() -> T:
        url = cfg.livekit_url.replace("ws://", "http://")
        async with lkapi.LiveKitAPI(
            url, cfg.secrets.livekit_api_key, cfg.secrets.livekit_api_secret
        ) as api:
            return await call(api.sip)

    return asyncio.run(run())


def trunks(cfg: StackConfig) -> list[lkapi.SIPInboundTrunkInfo]:
    return list(sip(cfg, lambda s: s.list_inbound_trunk(lkapi.ListSIPInboundTrunkRequest())).items)


def rules(cfg: StackConfig) -> list[lkapi.SIPDispatchRuleInfo]:
    return list(sip(cfg, lambda s: s.list_dispatch_rule(lkapi.ListSIPDispatchRuleRequest())).items)


@pytest.fixture(autouse=True)
def empty(livekit: StackConfig) -> None:
    """Each test starts with no trunk and no rule."""

    async def clear(s: SipService) -> None:
        for rule in (await s.list_dispatch_rule(lkapi.ListSIPDispatchRuleRequest())).items:
            await s.delete_dispatch_rule(
                lkapi.DeleteSIPDispatchRuleRequest(sip_dispatch_rule_id=rule.sip_dispatch_rule_id)
            )
        for trunk in (await s.list_inbound_trunk(lkapi.ListSIPInboundTrunkRequest())).items:
            await s.delete_trunk(lkapi.DeleteSIPTrunkRequest(sip_trunk_id=trunk.sip_trunk_id))

    sip(livekit, clear)


def kaiwa(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """Run the CLI in this process; its exit code and everything it printed."""
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out + err


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "sip.toml"
    path.write_text(text)
    return str(path)


def make_open_rule(cfg: StackConfig) -> None:
    """What the quick-start guides show: a catch-all rule with no trunk."""
    sip(
        cfg,
        lambda s: s.create_dispatch_rule(
            lkapi.CreateSIPDispatchRuleRequest(
                dispatch_rule=lkapi.SIPDispatchRuleInfo(
                    name="catch-all",
                    rule=lkapi.SIPDispatchRule(
                        dispatch_rule_individual=lkapi.SIPDispatchRuleIndividual(room_prefix="call")
                    ),
                )
            )
        ),
    )


def test_apply_is_idempotent_and_check_passes_on_it(
    livekit: StackConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = write(tmp_path, TRUNK.format(address="203.0.113.5/32") + RULE)
    code, out = kaiwa(capsys, "sip", "apply", file)
    assert code == 0, out
    assert "2 changes" in out
    code, out = kaiwa(capsys, "sip", "apply", file)
    assert code == 0, out
    assert out.strip() == "0 changes"

    [trunk], [rule] = trunks(livekit), rules(livekit)
    assert rule.trunk_ids == [trunk.sip_trunk_id]
    assert trunk.auth_password == PASSWORD
    assert trunk.ringing_timeout.seconds == 15
    # The room a phone call makes is the one a browser caller's token makes.
    [agent] = rule.room_config.agents
    assert agent.agent_name == AGENT_NAME
    assert '"mode": "dialog"' in agent.metadata and '"scenario": "assistant"' in agent.metadata
    assert rule.room_config.max_participants == 4
    assert dict(rule.attributes) == {LANGUAGE_ATTRIBUTE: "ja", MODE_ATTRIBUTE: "dialog"}
    assert rule.rule.dispatch_rule_callee.randomize

    code, out = kaiwa(capsys, "sip", "check")
    assert code == 0, out
    assert "0 errors" in out
    assert PASSWORD not in out


def test_a_changed_field_is_updated_in_place(
    livekit: StackConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        kaiwa(
            capsys, "sip", "apply", write(tmp_path, TRUNK.format(address="203.0.113.5/32") + RULE)
        )[0]
        == 0
    )
    [before], [rule_before] = trunks(livekit), rules(livekit)

    changed = TRUNK.format(address="198.51.100.0/28") + RULE.replace(
        "max_participants = 4", "max_participants = 6"
    )
    code, out = kaiwa(capsys, "sip", "apply", write(tmp_path, changed))
    assert code == 0, out
    assert "allowed_addresses" in out and "room_config" in out
    assert "2 changes" in out

    [after], [rule_after] = trunks(livekit), rules(livekit)
    assert after.sip_trunk_id == before.sip_trunk_id
    assert list(after.allowed_addresses) == ["198.51.100.0/28"]
    assert rule_after.sip_dispatch_rule_id == rule_before.sip_dispatch_rule_id
    assert rule_after.room_config.max_participants == 6
    assert kaiwa(capsys, "sip", "apply", write(tmp_path, changed))[1].strip() == "0 changes"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (
            TRUNK.format(address="203.0.113.5/32") + RULE.replace('trunks = ["provider"]', ""),
            "no trunk",
        ),
        (TRUNK.format(address="203.0.113.5") + RULE, "no prefix length"),
        (TRUNK.format(address="sip.example.net") + RULE, "hostname"),
        (TRUNK.format(address="203.0.112.0/23") + RULE, "wider than /24"),
        (
            TRUNK.format(address="203.0.113.5/32") + RULE.replace('"provider"]', '"other"]'),
            "no trunk named 'other'",
        ),
        (
            TRUNK.format(address="203.0.113.5/32").replace(
                'auth_password_env = "TEST_SIP_PASSWORD"', 'auth_password = "short"'
            )
            + RULE,
            "shorter than 16",
        ),
        (
            TRUNK.format(address="203.0.113.5/32") + RULE + 'room_naming = "individual"\n',
            "hide_phone_number",
        ),
    ],
)
def test_an_unsafe_file_is_refused_whole(
    livekit: StackConfig,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    text: str,
    reason: str,
) -> None:
    code, out = kaiwa(capsys, "sip", "apply", write(tmp_path, text))
    assert code != 0
    assert reason in out
    assert "nothing was changed" in out
    # The trunk was valid in most of these: checked before the first call, it was not made.
    assert trunks(livekit) == [] and rules(livekit) == []


def test_an_open_trunk_needs_allow_open_and_a_loopback_bridge(
    livekit: StackConfig,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # LiveKit itself takes a trunk with only numbers; Kaiwa does not, by default.
    text = '[[trunk]]\nname = "lab"\nnumbers = ["+15550100"]\n' + RULE.replace(
        '"provider"', '"lab"'
    )
    file = write(tmp_path, text)
    code, out = kaiwa(capsys, "sip", "apply", file)
    assert code != 0 and "--allow-open" in out
    monkeypatch.setenv("KAIWA_SIP_LISTEN_IP", "0.0.0.0")
    code, out = kaiwa(capsys, "sip", "apply", file, "--allow-open")
    assert code != 0 and "KAIWA_SIP_LISTEN_IP is 0.0.0.0" in out
    assert trunks(livekit) == []
    monkeypatch.setenv("KAIWA_SIP_LISTEN_IP", "127.0.0.1")
    code, out = kaiwa(capsys, "sip", "apply", file, "--allow-open")
    assert code == 0, out
    # check still says what it is.
    code, out = kaiwa(capsys, "sip", "check")
    assert code != 0 and "open_trunk" in out


def test_prune_deletes_only_what_kaiwa_made(
    livekit: StackConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    both = TRUNK.format(address="203.0.113.5/32") + RULE
    assert kaiwa(capsys, "sip", "apply", write(tmp_path, both))[0] == 0
    # Someone else's trunk, made straight through livekit-api.
    sip(
        livekit,
        lambda s: s.create_inbound_trunk(
            lkapi.CreateSIPInboundTrunkRequest(
                trunk=lkapi.SIPInboundTrunkInfo(
                    name="theirs", numbers=["+15550199"], allowed_addresses=["192.0.2.1/32"]
                )
            )
        ),
    )
    only_trunk = TRUNK.format(address="203.0.113.5/32")
    code, out = kaiwa(capsys, "sip", "apply", write(tmp_path, only_trunk))
    assert code == 0 and out.strip() == "0 changes"  # without --prune nothing goes
    assert len(rules(livekit)) == 1

    code, out = kaiwa(capsys, "sip", "apply", write(tmp_path, only_trunk), "--prune")
    assert code == 0, out
    assert 'deleted rule "ja-dialog"' in out and "1 changes" in out
    assert rules(livekit) == []
    assert sorted(t.name for t in trunks(livekit)) == ["provider", "theirs"]

    code, out = kaiwa(capsys, "sip", "apply", write(tmp_path, ""), "--prune")
    assert code == 0, out
    assert [t.name for t in trunks(livekit)] == ["theirs"]


def test_apply_leaves_an_object_it_did_not_make(
    livekit: StackConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sip(
        livekit,
        lambda s: s.create_inbound_trunk(
            lkapi.CreateSIPInboundTrunkRequest(
                trunk=lkapi.SIPInboundTrunkInfo(
                    name="provider", numbers=["+15550199"], allowed_addresses=["192.0.2.1/32"]
                )
            )
        ),
    )
    code, out = kaiwa(
        capsys, "sip", "apply", write(tmp_path, TRUNK.format(address="203.0.113.5/32") + RULE)
    )
    assert code != 0 and "not made by Kaiwa" in out
    assert [list(t.numbers) for t in trunks(livekit)] == [["+15550199"]] and rules(livekit) == []


def test_check_fails_on_a_trunkless_rule_made_outside_kaiwa(
    livekit: StackConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    make_open_rule(livekit)
    code, out = kaiwa(capsys, "sip", "check")
    assert code != 0
    assert "open_rule" in out and "individual_shows_number" in out
    assert 'rule "catch-all"' in out


def test_check_fails_on_a_bare_ip_made_outside_kaiwa(
    livekit: StackConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    sip(
        livekit,
        lambda s: s.create_inbound_trunk(
            lkapi.CreateSIPInboundTrunkRequest(
                trunk=lkapi.SIPInboundTrunkInfo(
                    name="bare",
                    numbers=["+15550100"],
                    allowed_addresses=["203.0.113.5"],
                    auth_username="kaiwa",
                    auth_password="tiny",
                )
            )
        ),
    )
    code, out = kaiwa(capsys, "sip", "check")
    assert code != 0
    assert "address_without_prefix" in out and "short_password" in out
    assert "tiny" not in out


class Bridge(http.server.ThreadingHTTPServer):
    """Stands in for the SIP bridge's health port: answers `status` to every GET."""

    status = 200


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Bridge

    def do_GET(self) -> None:
        self.send_response(self.server.status)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def bridge() -> Iterator[Bridge]:
    server = Bridge(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def sip_health(
    livekit: StackConfig, tmp_path: Path, url: str | None
) -> Iterator[Callable[[], dict[str, object] | None]]:
    """A running API; each call reads the `sip` component of its /healthz."""
    database = f"sqlite:///{tmp_path / 'kaiwa.db'}"
    settings = api_settings(livekit, database, tmp_path, sip_health_url=url)
    with client_for(settings) as client:

        def read() -> dict[str, object] | None:
            part: dict[str, object] | None = client.get("/healthz").json()["components"].get("sip")
            return part

        yield read


def test_healthz_reports_the_bridge(livekit: StackConfig, tmp_path: Path) -> None:
    with (
        bridge() as server,
        sip_health(livekit, tmp_path, f"http://127.0.0.1:{server.server_port}/") as health,
    ):
        assert health() == {"ok": True, "degraded": False, "detail": "bridge ok", "latency_ms": ANY}
        server.status = 429
        part = health()
        assert part is not None and part["ok"] is True and part["degraded"] is True
        server.status = 503
        part = health()
        assert part is not None and part["ok"] is False and "503" in str(part["detail"])
        port = server.server_port
    with sip_health(livekit, tmp_path, f"http://127.0.0.1:{port}/") as health:
        part = health()
    assert part is not None and part["ok"] is False
    assert "unreachable" in str(part["detail"])


def test_healthz_without_a_bridge_reports_no_sip(livekit: StackConfig, tmp_path: Path) -> None:
    with sip_health(livekit, tmp_path, None) as health:
        assert health() is None


def test_healthz_reports_an_open_dispatch_rule(livekit: StackConfig, tmp_path: Path) -> None:
    make_open_rule(livekit)
    with (
        bridge() as server,
        sip_health(livekit, tmp_path, f"http://127.0.0.1:{server.server_port}/") as health,
    ):
        part = health()
    assert part is not None and part["ok"] is False
    assert 'open dispatch rule: rule "catch-all"' in str(part["detail"])
    # Reported even where this API has no bridge configured: the bridge may run elsewhere.
    with sip_health(livekit, tmp_path, None) as health:
        part = health()
    assert part is not None and part["ok"] is False
