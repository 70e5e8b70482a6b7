"""Sentence translation through the language model, with a strict prompt and a short cache.

The same sentence often goes to several listeners' languages at once, and the same text
recurs (greetings, repeated questions): each (text, source, target) is translated once while
it stays in the cache, and concurrent requests for it share one model call.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict
from collections.abc import Iterable

from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam

from core.languages import language_name

# Small models follow demonstrations better than instructions: a long list of "don'ts" in
# the system prompt got translated itself. Parallel examples, used as prior turns for the
# requested direction, fix that; the prefix is the same for every sentence in a direction,
# so the server's prompt cache makes it nearly free after the first call.
SYSTEM_PROMPT = "Translate {source} into {target}. Reply with the translation only."
EXAMPLES = (
    {
        "en": "Good morning. How are you today?",
        "ja": "おはようございます。今日はお元気ですか。",
        "vi": "Chào buổi sáng. Hôm nay bạn khỏe không?",
    },
    {
        "en": "Thank you for your help yesterday.",
        "ja": "昨日は手伝ってくれてありがとうございました。",
        "vi": "Cảm ơn bạn đã giúp đỡ hôm qua.",
    },
    {
        "en": "Can I pay by card?",
        "ja": "カードで払えますか。",
        "vi": "Tôi có thể trả bằng thẻ không?",
    },
)


def prompt(text: str, source: str, target: str) -> list[ChatCompletionMessageParam]:
    src, tgt = source.split("-")[0].lower(), target.split("-")[0].lower()
    messages: list[ChatCompletionMessageParam] = [
        {
            "role": "system",
            "content": SYSTEM_PROMPT.format(
                source=language_name(source), target=language_name(target)
            ),
        }
    ]
    for example in EXAMPLES:
        if src in example and tgt in example:
            messages += [
                {"role": "user", "content": example[src]},
                {"role": "assistant", "content": example[tgt]},
            ]
    messages.append({"role": "user", "content": text})
    return messages


# Labels and wrappers small models add despite the prompt.
_LABEL = re.compile(
    r"^\s*(?:translation|translated text|[a-z]+ translation|english|japanese|vietnamese|"
    r"日本語|英語|訳)\s*[:：]\s*",
    re.IGNORECASE,
)
_QUOTES = "\"'“”‘’「」『』«»"


def clean(output: str) -> str:
    """The translation alone: first paragraph, no label, no wrapping quotes or notes."""
    text = output.strip().split("\n\n")[0].strip()
    lines = [line for line in text.splitlines() if line.strip()]
    text = lines[0].strip() if lines else ""
    text = _LABEL.sub("", text)
    text = re.sub(r"\s*[(（](?:note|注|literally|lit\.)[^)）]*[)）]\s*$", "", text, flags=re.I)
    if len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
        text = text[1:-1].strip()
    return text


class Translator:
    def __init__(
        self,
        client: AsyncOpenAI,
        model: str,
        *,
        cache_ttl_s: float = 600.0,
        cache_size: int = 2048,
        timeout_s: float = 15.0,
    ) -> None:
        self._client = client
        self._model = model
        self._ttl = cache_ttl_s
        self._size = cache_size
        self._timeout = timeout_s
        self._cache: OrderedDict[tuple[str, str, str], tuple[float, str]] = OrderedDict()
        self._pending: dict[tuple[str, str, str], asyncio.Future[str]] = {}
        self.model_calls = 0

    async def translate(self, text: str, source: str, targets: Iterable[str]) -> dict[str, str]:
        """`text` in every target language (the source language maps to the text itself)."""
        wanted = list(dict.fromkeys(t for t in targets))
        results = await asyncio.gather(*(self.translate_one(text, source, t) for t in wanted))
        return dict(zip(wanted, results, strict=True))

    async def translate_one(self, text: str, source: str, target: str) -> str:
        text = text.strip()
        if not text or target.split("-")[0] == source.split("-")[0]:
            return text
        key = (text, source, target)
        cached = self._cache.get(key)
        if cached is not None and time.monotonic() - cached[0] < self._ttl:
            self._cache.move_to_end(key)
            return cached[1]
        pending = self._pending.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            result = await self._call_model(text, source, target)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here; waiters re-raise it
            raise
        finally:
            self._pending.pop(key, None)
        future.set_result(result)
        self._remember(key, result)
        return result

    async def _call_model(self, text: str, source: str, target: str) -> str:
        self.model_calls += 1
        response = await self._client.chat.completions.create(
            model=self._model,
            temperature=0,
            # A translation is rarely more than 3x the source in tokens; this bounds runaways.
            max_tokens=min(512, 16 + 3 * len(text)),
            messages=prompt(text, source, target),
            timeout=self._timeout,
        )
        return clean(response.choices[0].message.content or "")

    async def warm(self, source: str, target: str) -> None:
        """Have the model server cache this direction's prompt prefix (system prompt and
        examples), so the first real sentence does not pay for reading it: on 2 cores that
        is several seconds."""
        if source.split("-")[0] == target.split("-")[0]:
            return
        await self._client.chat.completions.create(
            model=self._model,
            temperature=0,
            max_tokens=1,
            messages=prompt("Hello.", source, target),
            timeout=self._timeout,
        )

    def _remember(self, key: tuple[str, str, str], value: str) -> None:
        self._cache[key] = (time.monotonic(), value)
        self._cache.move_to_end(key)
        while len(self._cache) > self._size:
            self._cache.popitem(last=False)
