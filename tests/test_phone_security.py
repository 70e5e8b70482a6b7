"""Who may call: only addresses, numbers and credentials a trunk allows get a room, an agent
and a recording. Everything else is dropped before any of those exist."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from kaiwa.phone import CallResult, PhoneCall, flood, phone_line, place_call
from kaiwa.stack.services import Stack, sip_health
from tests.support.calls import History
from tests.support.phone import conversations, rooms

pytestmark = [pytest.mark.e2e]

# A second loopback address: a caller the trunks do not list.
STRANGER = "127.0.0.2"


async def dial(stack: Stack, number: str, **options: object) -> CallResult:
    call = PhoneCall(
        bridge_port=stack.cfg.ports.sip,
        called=number,
        answer_timeout_s=6.0,
        hang_up_after_s=1.0,
        **options,  # type: ignore[arg-type]
    )
    result = await place_call(call)
    result.ear.close()
    return result


async def assert_nothing_created(stack: Stack, number: str) -> None:
    assert await rooms(stack.cfg, f"phone_{number}") == []
    assert await conversations(stack.cfg, f"phone_{number}") == []


async def test_a_call_from_an_address_no_trunk_allows_is_dropped(stack: Stack) -> None:
    async with phone_line(stack.cfg, "+15550002001", allowed_addresses=("127.0.0.1/32",)):
        result = await dial(stack, "+15550002001", local_ip=STRANGER)
    # The bridge has said 100 and 180 before it asks LiveKit; then it drops the call
    # without a final answer ("Rejecting inbound flood" in its log), and the phone gives up.
    assert not result.answered and set(result.statuses) <= {100, 180}, result.statuses
    await assert_nothing_created(stack, "+15550002001")


async def test_a_spoofed_from_host_passes_a_bare_address_but_not_a_prefix(stack: Stack) -> None:
    # LiveKit matches an allowed address also against the From header's host, as text: a
    # bare address lets in anyone who writes it there. That is why `kaiwa sip` demands /32.
    async with phone_line(stack.cfg, "+15550002002", allowed_addresses=("127.0.0.1",)):
        spoofed = await dial(stack, "+15550002002", local_ip=STRANGER, from_host="127.0.0.1")
    assert spoofed.answered, spoofed.log

    async with phone_line(stack.cfg, "+15550002003", allowed_addresses=("127.0.0.1/32",)):
        result = await dial(stack, "+15550002003", local_ip=STRANGER, from_host="127.0.0.1")
    assert not result.answered, result.statuses
    await assert_nothing_created(stack, "+15550002003")


async def test_digest_credentials_are_challenged_and_checked(stack: Stack) -> None:
    credentials = ("kaiwa-phone", "correct-horse-battery-staple")
    async with phone_line(stack.cfg, "+15550002004", allowed_addresses=(), auth=credentials):
        anonymous = await dial(stack, "+15550002004")
        wrong = await dial(stack, "+15550002004", auth=(credentials[0], "not-the-password"))
        await assert_nothing_created(stack, "+15550002004")
        right = await dial(stack, "+15550002004", auth=credentials)
    # 407 Proxy-Authenticate first; a wrong answer to it is refused with 401.
    assert 407 in anonymous.statuses and not anonymous.answered, anonymous.statuses
    assert 401 in wrong.statuses and not wrong.answered, wrong.statuses
    assert right.answered, right.log


async def test_an_offer_with_no_common_codec_is_refused_before_any_room(stack: Stack) -> None:
    async with phone_line(stack.cfg, "+15550002005"):
        result = await dial(stack, "+15550002005", codecs=("G729",))
    finals = [s for s in result.statuses if s >= 300]
    assert finals and 400 <= finals[0] < 500, result.statuses
    await assert_nothing_created(stack, "+15550002005")


async def test_with_no_agent_the_phone_rings_until_the_trunk_gives_up(stack: Stack) -> None:
    # A rule whose agent no worker serves: LiveKit does not retry a dispatch, as when every
    # worker is full or stopped.
    number = "+15550002006"
    async with phone_line(stack.cfg, number, agent_name="kaiwa-absent", ringing_timeout_s=5):
        result = await dial(stack, number)
    assert not result.answered and result.invited_at is not None
    # It rang (180 every second) until the trunk's ringing timeout, then the bridge gave up.
    assert result.statuses.count(180) >= 3, result.statuses
    final = [m for m in result.messages if not m.sent and (m.status or 0) >= 300][0]
    assert final.status == 486 and abs(final.at - result.invited_at - 5.0) <= 1.0, final
    # History shows the attempt: the phone caller alone, nobody answered, nothing said.
    (stored,) = await conversations(stack.cfg, f"phone_{number}")
    history = History(stack, stored["room_name"])
    # The room closes when its departure timeout has passed after the phone left.
    detail = await history.wait_until(lambda d: d["ended_at"], "the call's end", timeout_s=60)
    assert [p["kind"] for p in detail["participants"]] == ["sip"]
    assert detail["transcript"] == []


async def test_a_flood_from_a_denied_address_creates_nothing_and_a_real_call_gets_in(
    stack: Stack,
) -> None:
    cfg = stack.cfg
    number = "+15550002007"
    redis = aioredis.Redis(port=cfg.ports.redis)
    memory_before = (await redis.info("memory"))["used_memory"]
    async with phone_line(cfg, number, allowed_addresses=("127.0.0.1/32",)):
        # 50 INVITEs a second for 30 s from an address no trunk lists.
        flooding = asyncio.create_task(
            flood(cfg.ports.sip, number, local_ip=STRANGER, rate_per_s=50, seconds=30)
        )
        await asyncio.sleep(5)
        call = PhoneCall(
            bridge_port=cfg.ports.sip, called=number, hang_up_after_s=6.0, answer_timeout_s=20
        )
        legit = await place_call(call)
        legit.ear.close()
        flooded = await flooding
    # The bridge kept up: every INVITE got its 100 and 180 and then nothing, and it is up.
    assert flooded.sent >= 1400 and flooded.provisional >= 0.95 * flooded.sent, flooded
    assert stack.services["sip"].running() and sip_health(cfg) in (200, 429)
    # The caller from the trunk's address was answered, and the agent greeted them.
    assert legit.answered and legit.greeting_delay_s() is not None, legit.log
    # Only that call got a room and a history; Redis holds nothing for the rest.
    (stored,) = await conversations(cfg, f"phone_{number}")
    assert len(await rooms(cfg, f"phone_{number}")) <= 1
    memory_after = (await redis.info("memory"))["used_memory"]
    assert memory_after - memory_before < 4 * 2**20, (memory_before, memory_after)
    await redis.aclose()
