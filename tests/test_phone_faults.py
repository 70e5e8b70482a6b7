"""The phone path through a Redis outage, on a stack of its own (the shared one's Redis is
everyone's): new calls are refused with 503 while it is down, calls in progress keep their
audio, and calls connect again soon after it returns."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kaiwa.phone import PhoneCall, phone_line, place_call
from kaiwa.stack.services import Stack
from tests.support.servers import SMALL_LLM, make_stack_config, running_stack

pytestmark = [pytest.mark.e2e]


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # No test here checks what the model says: the small one leaves the cores to the calls.
    config = make_stack_config(Path(tmp_path_factory.mktemp("outage")), llm_model=SMALL_LLM)
    with running_stack(config) as stack:
        yield stack


async def test_calls_survive_a_redis_outage_and_new_ones_connect_after_it(
    own_stack: Stack,
) -> None:
    cfg = own_stack.cfg
    redis = own_stack.services["redis"]
    async with phone_line(cfg, "+15550003001") as line:

        def call(caller: str, seconds: float) -> PhoneCall:
            return PhoneCall(
                cfg.ports.sip,
                line.number,
                caller=caller,
                hang_up_after_s=seconds,
                answer_timeout_s=6,
            )

        in_progress = asyncio.create_task(place_call(call("+15550000001", 25)))
        await asyncio.sleep(8.0)
        await asyncio.to_thread(redis.stop)
        down_at = time.time()
        refused = await place_call(call("+15550000002", 2))
        refused.ear.close()
        await asyncio.sleep(3.0)
        await asyncio.to_thread(redis.start)
        await asyncio.to_thread(redis.wait_ready)
        up_at = time.time()
        # A new call each second: the first to connect says when calls are back.
        probes = []
        for index in range(10):
            probes.append(asyncio.create_task(place_call(call(f"+155500001{index:02d}", 2))))
            await asyncio.sleep(1.0)
        answered = []
        for probe in await asyncio.gather(*probes):
            probe.ear.close()
            if probe.answered and probe.invited_at is not None:
                answered.append(probe.invited_at - up_at)
        kept = await in_progress
        kept.ear.close()

    # While Redis was down the bridge could not ask LiveKit: "503 Try again later".
    assert 503 in refused.statuses and not refused.answered, refused.statuses
    # The call in progress kept its audio through the outage (the bridge sends 50 packets a
    # second to the phone, silence included).
    assert kept.answered
    during = [p for p in kept.ear.packets if down_at <= p.at <= up_at]
    assert len(during) >= 0.8 * 50 * (up_at - down_at), len(during)
    # New calls connect again within 10 s of Redis returning.
    assert answered and min(answered) <= 10.0, answered
