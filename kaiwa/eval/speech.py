"""`kaiwa eval speech`: STT accuracy and speed, MT chrF, TTS speed, on the project's own set.

Speech is synthesized from the reference texts by the project's voices (piper en, Open JTalk
ja) and by espeak-ng (en, vi), so every figure is reproducible on a machine with no network.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jiwer
import numpy as np
import sacrebleu
from livekit import rtc
from openai import AsyncOpenAI

from agents import engines
from agents.stt.whisper import WhisperSTT
from agents.stt.whisper_model import SAMPLE_RATE, WhisperOptions
from agents.translate import GRAMMARS, Translator, prompt
from agents.tts.local import LocalTTS, resample
from agents.tts.voices import EspeakVoice, Voice

from .text import normalize

SENTENCES = Path(__file__).with_name("sentences.json")
LANGUAGES = ("en", "ja", "vi")


@dataclass
class Utterance:
    language: str
    voice: str
    text: str
    pcm16k: np.ndarray  # int16 mono at 16 kHz


def load_sentences(split: str = "sentences") -> list[dict[str, str]]:
    """The set (`sentences`), or its held-out split for translation (`held_out`)."""
    sentences: list[dict[str, str]] = json.loads(SENTENCES.read_text())[split]
    return sentences


def resampled(pcm: np.ndarray, rate: int, out_rate: int) -> np.ndarray:
    frames = resample(pcm, rate, out_rate)
    return np.concatenate([np.frombuffer(f.data, dtype=np.int16) for f in frames])


def to_16k(pcm: np.ndarray, rate: int) -> np.ndarray:
    return resampled(pcm, rate, SAMPLE_RATE)


def voices() -> dict[str, list[Voice]]:
    return {
        "en": [engines.voice("en"), EspeakVoice("en-us")],
        "ja": [engines.voice("ja")],  # espeak-ng reads only kana in Japanese
        "vi": [engines.voice("vi")],
    }


def synthesize_set(sentences: list[dict[str, str]]) -> tuple[list[Utterance], dict[str, Any]]:
    """The speech to recognise, and TTS real-time factor per voice."""
    utterances, tts = [], {}
    for language, language_voices in voices().items():
        for voice in language_voices:
            synth_s = audio_s = 0.0
            for sentence in sentences:
                started = time.perf_counter()
                pcm = voice.synthesize(sentence[language])
                synth_s += time.perf_counter() - started
                audio_s += len(pcm) / voice.sample_rate
                utterances.append(
                    Utterance(
                        language, voice.name, sentence[language], to_16k(pcm, voice.sample_rate)
                    )
                )
            tts[voice.name] = {"rtf": round(synth_s / audio_s, 3)}
    return utterances, tts


async def first_audio_s(language: str, text: str, repeats: int = 5) -> float:
    """Median time from handing a sentence to the TTS plugin to its first audio frame."""
    tts = LocalTTS(engines.voice(language))
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        stream = tts.synthesize(text)
        async for _event in stream:
            times.append(time.perf_counter() - started)
            break
        await stream.aclose()
    return statistics.median(times)


def score_stt(
    utterances: list[Utterance], stt_model: str
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Error and speed per language and voice; and what was heard, by the same key."""
    engine = engines.whisper(stt_model)
    results: dict[str, Any] = {}
    heard: dict[str, list[str]] = {}
    for key in sorted({(u.language, u.voice) for u in utterances}):
        language, voice = key
        refs, hyps = [], []
        decode_s = audio_s = 0.0
        for u in utterances:
            if (u.language, u.voice) != key:
                continue
            audio = u.pcm16k.astype(np.float32) / 32768.0
            started = time.perf_counter()
            result = engine.transcribe(audio, WhisperOptions(language=language))
            decode_s += time.perf_counter() - started
            audio_s += len(audio) / SAMPLE_RATE
            refs.append(normalize(u.text, language))
            hyps.append(normalize(result.text, language))
            heard.setdefault(f"{language}/{voice}", []).append(result.text)
        metric = "cer" if language == "ja" else "wer"
        error = jiwer.cer(refs, hyps) if metric == "cer" else jiwer.wer(refs, hyps)
        results[f"{language}/{voice}"] = {
            metric: round(float(error), 4),
            "rtf": round(decode_s / audio_s, 3),
        }
    return results, heard


def language_detection(utterances: list[Utterance], stt_model: str) -> dict[str, Any]:
    """How well speech in another language than the one set is told apart, per voice, at the
    threshold the STT uses (`WhisperOptions.follow_heard_language_p`):
    - `caught`: the share Whisper names as its own language with at least that probability.
      Spoken by someone set to another language, it is transcribed as heard and captioned
      as such, not translated.
    - `false_switch`: the share it names as another language with at least that
      probability. Spoken by someone set to its own language, it would be transcribed as
      that other language: a lost sentence.
    """
    engine = engines.whisper(stt_model)
    threshold = WhisperOptions().follow_heard_language_p or 1.0
    results: dict[str, Any] = {"threshold": threshold}
    for key in sorted({(u.language, u.voice) for u in utterances}):
        language, voice = key
        detected = [
            engine.detect_language(u.pcm16k.astype(np.float32) / 32768.0)
            for u in utterances
            if (u.language, u.voice) == key
        ]
        sure = [heard for heard, p in detected if p >= threshold]
        results[f"{language}/{voice}"] = {
            "n": len(detected),
            "caught": round(sure.count(language) / len(detected), 3),
            "false_switch": round((len(sure) - sure.count(language)) / len(detected), 3),
            "median_p_own": round(
                statistics.median(p if heard == language else 0.0 for heard, p in detected), 3
            ),
            "heard_instead": sorted({heard for heard, _p in detected if heard != language}),
        }
    return results


def evaluate_languages(stt_model: str = "whisper-base") -> dict[str, Any]:
    """Language detection on both splits' speech (no language model needed)."""
    wideband = [
        u for split in ("sentences", "held_out") for u in synthesize_set(load_sentences(split))[0]
    ]
    # The same speech through a phone's 8 kHz band, as SIP callers' arrives.
    phone = [
        Utterance(
            u.language,
            f"{u.voice} @8kHz",
            u.text,
            to_16k(resampled(u.pcm16k, SAMPLE_RATE, 8000), 8000),
        )
        for u in wideband
    ]
    utterances = wideband + phone
    return {"stt_model": stt_model, "languages": language_detection(utterances, stt_model)}


def languages_table(figures: dict[str, Any]) -> str:
    detection = dict(figures["languages"])
    threshold = detection.pop("threshold")
    lines = [
        f"Speech in another language ({figures['stt_model']}, threshold p >= {threshold})",
        f"  {'language/voice':<34}{'n':>4}{'caught':>9}{'false switch':>14}{'median p':>10}",
    ]
    for key, value in detection.items():
        lines.append(
            f"  {key:<34}{value['n']:>4}{value['caught'] * 100:>8.0f}%"
            f"{value['false_switch'] * 100:>13.0f}%{value['median_p_own']:>10.2f}"
        )
    return "\n".join(lines)


async def final_latency(utterances: list[Utterance], stt_model: str) -> dict[str, float]:
    """End of a spoken utterance to its final transcript, streamed in real time (VAD wait
    included), over the set's utterances of 2-4 s."""
    recognizer = WhisperSTT(engines.whisper(stt_model), engines.vad())
    own_voices = ("piper", "openjtalk")
    chosen = [
        u
        for u in utterances
        if 2.0 <= len(u.pcm16k) / SAMPLE_RATE <= 4.0 and u.voice.startswith(own_voices)
    ]
    latencies = []
    for u in chosen[:8]:
        stream = recognizer.stream(language=u.language)
        audio = np.concatenate(
            [np.zeros(SAMPLE_RATE // 2, np.int16), u.pcm16k, np.zeros(SAMPLE_RATE * 2, np.int16)]
        )
        speech_end_sample = SAMPLE_RATE // 2 + last_voiced_sample(u.pcm16k)
        ended_at: list[float] = []
        finals: list[float] = []

        async def feed(
            stream: Any = stream,
            audio: np.ndarray = audio,
            speech_end_sample: int = speech_end_sample,
            ended_at: list[float] = ended_at,
        ) -> None:
            per = SAMPLE_RATE // 50
            start = time.perf_counter()
            for i in range(0, len(audio), per):
                chunk = np.pad(audio[i : i + per], (0, max(0, i + per - len(audio))))
                stream.push_frame(rtc.AudioFrame(chunk.tobytes(), SAMPLE_RATE, 1, per))
                if not ended_at and i + per >= speech_end_sample:
                    ended_at.append(time.perf_counter())
                due = start + (i + per) / SAMPLE_RATE
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
            stream.end_input()

        async def collect(stream: Any = stream, finals: list[float] = finals) -> None:
            async for event in stream:
                if event.type.value == "final_transcript" and not finals:
                    finals.append(time.perf_counter())

        await asyncio.gather(feed(), collect())
        await stream.aclose()
        if finals and ended_at:
            latencies.append(finals[0] - ended_at[0])
    return {
        "median_s": round(statistics.median(latencies), 3),
        "p95_s": round(float(np.percentile(latencies, 95)), 3),
        "n": len(latencies),
    }


def last_voiced_sample(pcm: np.ndarray, threshold: int = 300) -> int:
    voiced = np.nonzero(np.abs(pcm) > threshold)[0]
    return int(voiced[-1]) if len(voiced) else len(pcm)


DIRECTIONS = [(source, target) for source in LANGUAGES for target in LANGUAGES if source != target]
# The directions between the two languages the model knows least, tried through English too.
PIVOTED = [("ja", "vi"), ("vi", "ja")]


async def score_mt(
    translator: Translator, sentences: list[dict[str, str]], directions: list[tuple[str, str]]
) -> dict[str, Any]:
    """chrF against the references, time per sentence, and the checks' outcomes
    (agents/translation_check.py), per direction. A translation that failed its checks
    scores as empty: that is what a listener gets."""
    results: dict[str, Any] = {}
    for source, target in directions:
        before = translator.outcomes.copy()
        started = time.perf_counter()
        hyps = [await translator.translate_one(s[source], source, target) for s in sentences]
        elapsed = time.perf_counter() - started
        refs = [s[target] for s in sentences]
        chrf = sacrebleu.corpus_chrf([h or "" for h in hyps], [refs]).score
        results[f"{source}->{target}"] = {
            "chrf": round(float(chrf), 1),
            "seconds_per_sentence": round(elapsed / len(sentences), 2),
            "checks": dict(sorted((translator.outcomes - before).items())),
        }
    return results


async def check_heard(translator: Translator, heard: dict[str, list[str]]) -> dict[str, Any]:
    """What the checks make of translations of what the STT heard, mistakes and all: a
    caller's real input. Outcomes per voice, into the other two languages."""
    results: dict[str, Any] = {}
    for key, texts in heard.items():
        source = key.split("/")[0]
        before = translator.outcomes.copy()
        for text in texts:
            for target in LANGUAGES:
                if target != source:
                    await translator.translate_one(text, source, target)
        results[key] = dict(sorted((translator.outcomes - before).items()))
    return results


async def score_translation(
    sets: dict[str, list[dict[str, str]]], heard: dict[str, list[str]], llm_url: str, model: str
) -> dict[str, Any]:
    """Each set direct in every direction, then the pivoted directions through English; a
    fresh translator for each, so no run reads another's cache."""
    client = AsyncOpenAI(base_url=llm_url, api_key="local")
    figures: dict[str, Any] = {}
    for name, sentences in sets.items():
        figures[name] = await score_mt(Translator(client, model, pivots={}), sentences, DIRECTIONS)
    via_english = dict.fromkeys(PIVOTED, "en")
    figures["pivot"] = {
        name: await score_mt(Translator(client, model, pivots=via_english), sentences, PIVOTED)
        for name, sentences in sets.items()
    }
    figures["heard"] = await check_heard(Translator(client, model), heard)
    figures["retry_grammar"] = await grammar_cost(Translator(client, model), sets["dev"])
    return figures


async def grammar_cost(translator: Translator, sentences: list[dict[str, str]]) -> dict[str, Any]:
    """What the retry's grammar costs: the retry's strict prompt, en->vi, each sentence
    without and then with the grammar (the same prompt prefix, cached for both)."""
    seconds: dict[str, list[float]] = {"without": [], "with": []}
    for sentence in sentences:
        messages = prompt(sentence["en"], "en", "vi", strict=True)
        for name, grammar in (("without", None), ("with", GRAMMARS["vi"])):
            started = time.perf_counter()
            await translator.complete(messages, len(sentence["en"]), grammar=grammar)
            seconds[name].append(time.perf_counter() - started)
    without, with_grammar = (statistics.median(seconds[k]) for k in ("without", "with"))
    return {
        "median_s_without": round(without, 3),
        "median_s_with": round(with_grammar, 3),
        "ratio": round(with_grammar / without, 2),
        "n": len(sentences),
    }


async def evaluate(llm_url: str, llm_model: str, stt_model: str = "whisper-base") -> dict[str, Any]:
    sentences = load_sentences()
    utterances, tts = synthesize_set(sentences)
    for language, probe in (("en", sentences[1]["en"]), ("ja", sentences[1]["ja"])):
        name = engines.voice(language).name
        tts[name]["first_audio_s"] = round(await first_audio_s(language, probe), 3)
        tts[name]["first_audio_text"] = probe
    stt, heard = score_stt(utterances, stt_model)
    translation = await score_translation(
        {"dev": sentences, "held_out": load_sentences("held_out")}, heard, llm_url, llm_model
    )
    return {
        "stt_model": stt_model,
        "llm_model": llm_model,
        "sentences": len(sentences),
        "stt": stt,
        "stt_final_latency": await final_latency(utterances, stt_model),
        "tts": tts,
        **{f"mt_{name}": value for name, value in translation.items()},
    }


def table(figures: dict[str, Any]) -> str:
    lines = [f"STT ({figures['stt_model']})", f"  {'language/voice':<28}{'error':>10}{'RTF':>8}"]
    for key, value in figures["stt"].items():
        metric = "cer" if "cer" in value else "wer"
        lines.append(f"  {key:<28}{metric.upper()} {value[metric] * 100:5.1f}%{value['rtf']:>8.3f}")
    latency = figures["stt_final_latency"]
    lines.append(
        f"  final transcript after end of speech: median {latency['median_s']:.2f} s, "
        f"p95 {latency['p95_s']:.2f} s (n={latency['n']})"
    )
    for name, title in (
        ("mt_dev", "the set"),
        ("mt_held_out", "held-out split"),
    ):
        lines += ["", f"MT ({figures['llm_model']}), {title}", MT_HEADER]
        lines += [mt_row(key, value) for key, value in figures[name].items()]
    lines += ["", "MT through English", MT_HEADER]
    for name, rows in figures["mt_pivot"].items():
        lines += [mt_row(f"{key} {name}", value) for key, value in rows.items()]
    cost = figures["mt_retry_grammar"]
    lines.append(
        f"  retry grammar, en->vi: median {cost['median_s_without']:.2f} s without, "
        f"{cost['median_s_with']:.2f} s with (x{cost['ratio']:.2f}, n={cost['n']})"
    )
    lines += ["", "Checks on translations of what the STT heard (into the other two languages)"]
    for key, value in figures["mt_heard"].items():
        lines.append(f"  {key:<28}{checks(value)}")
    lines += ["", "TTS", f"  {'voice':<28}{'RTF':>8}{'first audio':>14}"]
    for key, value in figures["tts"].items():
        first = f"{value['first_audio_s']:.3f} s" if "first_audio_s" in value else "-"
        lines.append(f"  {key:<28}{value['rtf']:>8.3f}{first:>14}")
    return "\n".join(lines)


MT_HEADER = f"  {'direction':<20}{'chrF':>8}{'s/sentence':>12}  checks"


def mt_row(key: str, value: dict[str, Any]) -> str:
    return (
        f"  {key:<20}{value['chrf']:>8.1f}{value['seconds_per_sentence']:>12.2f}  "
        f"{checks(value['checks'])}"
    )


def checks(outcomes: dict[str, int]) -> str:
    return " ".join(f"{key}={count}" for key, count in outcomes.items())
