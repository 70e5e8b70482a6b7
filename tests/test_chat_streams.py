"""Typed messages' streams as an agent reads them (agents/chat.py), over a real
livekit-server: whatever a sender streams, the agent keeps a bounded amount of it.

livekit.rtc hands each incoming stream to a TextStreamReader, subscribed to the SDK's events
with a queue of no bound; the room holds the reader until its stream ends. A reader the agent
stops reading (a message past its limit, a stream that never ends) must be closed, or every
chunk that follows piles up in that queue for the life of the process. These tests look at
the SDK's own registry and queue, where that memory would be.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any

import pytest
from livekit import api as lkapi
from livekit import rtc

from agents import chat
from agents.chat import READ_LIMIT, ChatInbox, TypedMessage
from core.protocol import CHAT_TOPIC, MESSAGE_ID, NOTICE_REASON, NOTICE_TOPIC, SEGMENT_ID
from kaiwa.stack.config import StackConfig
from kaiwa.stack.services import livekit_service

pytestmark = pytest.mark.integration

CHUNK = "x" * 1000


@pytest.fixture(scope="module")
def livekit(services_config: StackConfig, redis_url: str) -> Iterator[StackConfig]:
    server = livekit_service(services_config)
    server.start()
    try:
        server.wait_ready()
        yield services_config
    finally:
        server.stop()


class Call:
    """An agent's room, taking typed messages with a ChatInbox, and a sender in it."""

    def __init__(self, cfg: StackConfig) -> None:
        self.cfg = cfg
        self.name = f"chat-streams-{uuid.uuid4().hex[:8]}"
        self.agent, self.sender = rtc.Room(), rtc.Room()
        self.inbox = ChatInbox()
        self.readers: list[rtc.TextStreamReader] = []
        self.results: asyncio.Queue[TypedMessage | None] = asyncio.Queue(10)
        self.notices: list[dict[str, str]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def _token(self, identity: str) -> str:
        secrets = self.cfg.secrets
        return (
            lkapi.AccessToken(secrets.livekit_api_key, secrets.livekit_api_secret)
            .with_identity(identity)
            .with_grants(lkapi.VideoGrants(room_join=True, room=self.name))
            .to_jwt()
        )

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_typed(self, reader: rtc.TextStreamReader, identity: str) -> None:
        self.readers.append(reader)

        async def read() -> None:
            await self.results.put(await self.inbox.read(self.agent, reader, identity))

        self._spawn(read())

    def _on_notice(self, reader: rtc.TextStreamReader, _identity: str) -> None:
        async def read() -> None:
            await reader.read_all()
            self.notices.append(dict(reader.info.attributes or {}))

        self._spawn(read())

    async def join(self) -> None:
        self.agent.register_text_stream_handler(CHAT_TOPIC, self._on_typed)
        self.sender.register_text_stream_handler(NOTICE_TOPIC, self._on_notice)
        await self.agent.connect(self.cfg.livekit_url, self._token("agent"))
        await self.sender.connect(self.cfg.livekit_url, self._token("sender"))
        for _ in range(100):
            if "sender" in self.agent.remote_participants:
                return
            await asyncio.sleep(0.05)
        raise TimeoutError("the agent never saw the sender")

    async def leave(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.sender.disconnect()
        await self.agent.disconnect()


@pytest.fixture
async def call(livekit: StackConfig) -> AsyncIterator[Call]:
    call = Call(livekit)
    await call.join()
    try:
        yield call
    finally:
        await call.leave()


async def test_an_oversized_message_is_refused_at_once_and_the_rest_not_kept(call: Call) -> None:
    message_id = uuid.uuid4().hex
    writer = await call.sender.local_participant.stream_text(
        topic=CHAT_TOPIC, attributes={MESSAGE_ID: message_id}, destination_identities=["agent"]
    )
    for _ in range(READ_LIMIT // len(CHUNK) + 1):
        await writer.write(CHUNK)
    # Refused while the sender is still streaming: nothing waits for the stream's end.
    assert await asyncio.wait_for(call.results.get(), 10) is None
    for _ in range(100):
        if call.notices:
            break
        await asyncio.sleep(0.05)
    assert call.notices == [{SEGMENT_ID: f"chat-{message_id}", NOTICE_REASON: "too_long"}]

    # The sender goes on streaming, then ends it: none of it is kept.
    (reader,) = call.readers
    kept = reader._queue.qsize()
    for _ in range(20):
        await writer.write(CHUNK)
    await writer.aclose()
    # Something that reaches the agent after all of it: by then it has passed the reader by.
    await call.sender.local_participant.send_text("after", topic=CHAT_TOPIC)
    assert isinstance(await asyncio.wait_for(call.results.get(), 10), TypedMessage)
    assert reader._queue.qsize() <= kept
    assert not call.agent._text_stream_readers


async def test_a_stream_that_never_ends_is_let_go(
    call: Call, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chat, "READ_TIMEOUT_S", 1.0)
    attributes = {MESSAGE_ID: uuid.uuid4().hex}
    writer = await call.sender.local_participant.stream_text(
        topic=CHAT_TOPIC, attributes=attributes, destination_identities=["agent"]
    )
    await writer.write("Hello, I am still typ")
    assert await asyncio.wait_for(call.results.get(), 10) is None
    assert not call.agent._text_stream_readers
    # Let go, it takes nothing more in; and nothing of it is told as taken or refused.
    (reader,) = call.readers
    kept = reader._queue.qsize()
    await writer.write("ing")
    await writer.aclose()
    await call.sender.local_participant.send_text("after", topic=CHAT_TOPIC)
    assert isinstance(await asyncio.wait_for(call.results.get(), 10), TypedMessage)
    assert reader._queue.qsize() <= kept
    assert not call.notices
