"""A failed language model request is counted by why it failed.

The translator's requests go through the real openai client to a real local HTTP server
that answers slowly, refuses, or is not there. The dialog's errors come wrapped in
livekit-agents' error event, built here from the library's own error types.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from livekit.agents import APIConnectionError, APIStatusError, APITimeoutError, llm
from openai import AsyncOpenAI

from agents.metrics import llm_error_reason
from agents.translate import Translator

pytestmark = pytest.mark.unit


async def _slow(request: web.Request) -> web.Response:
    await asyncio.sleep(2)  # past the translator's timeout of 0.5 s
    return web.json_response({})


async def _refuse(request: web.Request) -> web.Response:
    return web.json_response(
        {"error": {"code": 400, "message": "the request exceeds the available context size"}},
        status=400,
    )


@pytest.fixture
async def model_server() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/slow/chat/completions", _slow)
    app.router.add_post("/refuse/chat/completions", _refuse)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _translation_error(base_url: str) -> BaseException:
    client = AsyncOpenAI(base_url=base_url, api_key="local", max_retries=0)
    translator = Translator(client, "local", timeout_s=0.5)
    try:
        await translator.translate_one("Where is the station?", "en", "ja")
    except Exception as error:
        return error
    finally:
        await client.close()
    raise AssertionError("the translation did not fail")


async def test_a_translation_is_counted_as_timed_out_refused_or_unreachable(
    model_server: str,
) -> None:
    assert llm_error_reason(await _translation_error(f"{model_server}/slow")) == "timeout"
    assert llm_error_reason(await _translation_error(f"{model_server}/refuse")) == "refused"
    unreachable = f"http://127.0.0.1:{_closed_port()}"
    assert llm_error_reason(await _translation_error(unreachable)) == "unreachable"


def _retried(error: Exception) -> Exception:
    try:
        try:
            raise error
        except Exception as last:
            raise APIConnectionError("failed after 4 attempts") from last
    except APIConnectionError as raised:
        return raised


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (APITimeoutError("no answer in time"), "timeout"),
        (APIStatusError("exceeds the context size", status_code=400), "refused"),
        (APIConnectionError("connection refused"), "unreachable"),
        (RuntimeError("something else"), "other"),
        # livekit-agents' last retry: a connection error raised from the timeout it saw.
        (_retried(APITimeoutError("no answer in time")), "timeout"),
    ],
)
def test_a_dialog_reply_is_counted_by_the_error_inside_the_event(
    error: Exception, reason: str
) -> None:
    event = llm.LLMError(timestamp=0.0, label="local", error=error, recoverable=False)
    assert llm_error_reason(event) == reason
