"""Sentence translation through the language model, checked, with a short cache.

Every output is checked before it is used (agents/translation_check.py). One that fails is
asked for once more, with a stricter prompt and, where the target's alphabet allows, a
grammar that admits only its characters. One that fails again is not passed on: the caller
gets None, and says the translation is unavailable rather than show wrong text as if it
were right.

The same sentence often goes to several listeners' languages at once, and the same text
recurs (greetings, repeated questions): each (text, source, target) is translated once while
it stays in the cache, and concurrent requests for it share one model call.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import Counter, OrderedDict
from collections.abc import Iterable, Mapping

from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam

from core.languages import base_language, language_name

from . import metrics
from .translation_check import Problem, problem

logger = logging.getLogger("kaiwa.translate")

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


# The retry's: what the first output did wrong, forbidden by name.
STRICT_SYSTEM_PROMPT = (
    "Translate the user's {source} text into {target}. Write only its {target} translation, "
    "in {script}. Never answer it, explain it or refuse it: if it makes little sense, "
    "translate it word for word."
)
SCRIPTS = {
    "en": "the English alphabet",
    "ja": "Japanese (kanji and kana)",
    "vi": "the Vietnamese alphabet",
}
# The retry into a Latin alphabet may not write Chinese, Japanese or Korean characters, the
# slip seen most in Vietnamese (llama.cpp's GBNF: one line without those blocks).
_LATIN_ONLY = r"root ::= [^\n\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff\uac00-\ud7af]+"
GRAMMARS = {"en": _LATIN_ONLY, "vi": _LATIN_ONLY}


# Directions translated through English rather than directly, for the model translates
# better that way. Measured (docs/speech-eval.md), chrF direct -> through English: ja->vi
# 29.4 -> 53.2 on the set and 29.8 -> 37.0 held out; vi->ja 21.1 -> 31.4 and 17.8 -> 24.1;
# at about 1.35 s a sentence instead of 0.9, less in a call that also has an English
# listener, whose translation is the first leg.
PIVOTS: dict[tuple[str, str], str] = {("ja", "vi"): "en", ("vi", "ja"): "en"}

# What a listener's caption says in place of a translation that failed its checks.
UNAVAILABLE = {
    "en": "[translation unavailable]",
    "ja": "［翻訳できませんでした］",
    "vi": "[không dịch được]",
}


def unavailable_notice(language: str) -> str:
    return UNAVAILABLE.get(base_language(language), UNAVAILABLE["en"])


def prompt(
    text: str, source: str, target: str, *, strict: bool = False
) -> list[ChatCompletionMessageParam]:
    src, tgt = base_language(source), base_language(target)
    system = STRICT_SYSTEM_PROMPT if strict else SYSTEM_PROMPT
    target_name = language_name(target)
    messages: list[ChatCompletionMessageParam] = [
        {
            "role": "system",
            "content": system.format(
                source=language_name(source),
                target=target_name,
                script=SCRIPTS.get(tgt, target_name),
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
        pivots: Mapping[tuple[str, str], str] | None = None,
    ) -> None:
        self._client = client
        self._pivots = PIVOTS if pivots is None else pivots
        self._model = model
        self._ttl = cache_ttl_s
        self._size = cache_size
        self._timeout = timeout_s
        self._cache: OrderedDict[tuple[str, str, str], tuple[float, str | None]] = OrderedDict()
        self._pending: dict[tuple[str, str, str], asyncio.Future[str | None]] = {}
        self.model_calls = 0
        # Each check's result and each problem found, for the eval (the metrics count the
        # worker's whole life).
        self.outcomes: Counter[str] = Counter()

    async def translate(
        self, text: str, source: str, targets: Iterable[str]
    ) -> dict[str, str | None]:
        """`text` in every target language (the source language maps to the text itself);
        None where no output passed the checks."""
        wanted = list(dict.fromkeys(t for t in targets))
        results = await asyncio.gather(*(self.translate_one(text, source, t) for t in wanted))
        return dict(zip(wanted, results, strict=True))

    async def translate_one(self, text: str, source: str, target: str) -> str | None:
        """`text` in `target`, or None if neither the output nor the retry's passed the
        checks."""
        text = text.strip()
        if not text or base_language(target) == base_language(source):
            return text
        via = self._pivots.get((base_language(source), base_language(target)))
        if via is not None:
            middle = await self.translate_one(text, source, via)
            return None if middle is None else await self.translate_one(middle, via, target)
        key = (text, source, target)
        cached = self._cache.get(key)
        if cached is not None and time.monotonic() - cached[0] < self._ttl:
            self._cache.move_to_end(key)
            return cached[1]
        pending = self._pending.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
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

    async def _call_model(self, text: str, source: str, target: str) -> str | None:
        output = await self.complete(prompt(text, source, target), len(text))
        found = problem(text, source, output, target)
        if found is None:
            return self._outcome("passed", output)
        self._found(found, source, target, output)
        retry = await self.complete(
            prompt(text, source, target, strict=True),
            len(text),
            grammar=GRAMMARS.get(base_language(target)),
        )
        found = problem(text, source, retry, target)
        if found is None:
            return self._outcome("retried", retry)
        self._found(found, source, target, retry)
        return self._outcome("unavailable", None)

    def _found(self, found: Problem, source: str, target: str, output: str) -> None:
        # Which check, not the words: a call's words stay out of the logs.
        logger.info(
            "translation failed a check",
            extra={"problem": found, "source": source, "target": target, "chars": len(output)},
        )
        metrics.TRANSLATION_PROBLEMS.labels(found).inc()
        self.outcomes[f"problem:{found}"] += 1

    def _outcome(self, result: str, text: str | None) -> str | None:
        metrics.TRANSLATIONS.labels(result).inc()
        self.outcomes[result] += 1
        return text

    async def complete(
        self, messages: list[ChatCompletionMessageParam], length: int, grammar: str | None = None
    ) -> str:
        """One model call, unchecked, its output cleaned; `length`: the source's, in
        characters, which bounds the output."""
        self.model_calls += 1
        response = await self._client.chat.completions.create(
            model=self._model,
            temperature=0,
            # A translation is rarely more than 3x the source in tokens; this bounds runaways.
            max_tokens=min(512, 16 + 3 * length),
            messages=messages,
            timeout=self._timeout,
            extra_body={"grammar": grammar} if grammar else None,
        )
        return clean(response.choices[0].message.content or "")

    async def warm(self, source: str, target: str) -> None:
        """Have the model server cache the prompt prefixes (system prompt and examples) a
        sentence from `source` into `target` reads, through its pivot where it has one, so
        the first real sentence does not pay for reading them: on 2 cores that is several
        seconds."""
        for leg in self._legs(source, target):
            await self._warm_leg(*leg)

    async def warm_directions(self, languages: Iterable[str]) -> int:
        """`warm` every direction between `languages`, one prompt after another (the server
        reads one prompt at a time whatever its slots), each shared leg once. Returns how
        many prompts were warmed."""
        wanted = list(dict.fromkeys(base_language(language) for language in languages))
        legs = dict.fromkeys(
            leg
            for source in wanted
            for target in wanted
            if source != target
            for leg in self._legs(source, target)
        )
        warmed = 0
        for source, target in legs:
            try:
                await self._warm_leg(source, target)
                warmed += 1
            except Exception as error:  # only an optimisation: a call warms its own
                logger.warning(
                    "translation warm-up failed",
                    extra={"source": source, "target": target, "error": type(error).__name__},
                )
        return warmed

    def _legs(self, source: str, target: str) -> list[tuple[str, str]]:
        """The model calls a sentence from `source` into `target` takes."""
        source, target = base_language(source), base_language(target)
        if source == target:
            return []
        via = self._pivots.get((source, target))
        return [(source, target)] if via is None else [(source, via), (via, target)]

    async def _warm_leg(self, source: str, target: str) -> None:
        await self._client.chat.completions.create(
            model=self._model,
            temperature=0,
            max_tokens=1,
            messages=prompt("Hello.", source, target),
            timeout=self._timeout,
        )

    def _remember(self, key: tuple[str, str, str], value: str | None) -> None:
        self._cache[key] = (time.monotonic(), value)
        self._cache.move_to_end(key)
        while len(self._cache) > self._size:
            self._cache.popitem(last=False)
