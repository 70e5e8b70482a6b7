"""faster-whisper as Kaiwa runs it: one loaded model per process, decoded window by window.

The model, its decoding options (each with the measurement behind it) and the decode itself;
agents/stt/whisper.py streams it through livekit-agents' STT interface.
"""

from __future__ import annotations

import asyncio
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.audio import pad_or_trim
from faster_whisper.tokenizer import _LANGUAGE_CODES, Tokenizer
from faster_whisper.transcribe import get_suppressed_tokens

SAMPLE_RATE = 16000
WHISPER_LANGUAGES = frozenset(_LANGUAGE_CODES)
UNSPACED_LANGUAGES = frozenset({"ja", "zh"})
WINDOW_S = 30  # the model's input: 30 s of audio, 100 feature frames a second
WINDOW_SAMPLES = WINDOW_S * SAMPLE_RATE
FRAMES_PER_S = 100
WINDOW_MARGIN_S = 2.0
MAX_TOKENS_BASE = 16
MAX_TOKENS_PER_S = 16


@dataclass(frozen=True)
class WhisperOptions:
    language: str | None = None  # None: detect per segment
    interim_interval_s: float = 0.7
    max_segment_s: float = 28.0  # Whisper's window is 30 s
    min_speech_s: float = 0.2  # shorter bursts are clicks and breaths, not words
    beam_size: int = 1  # greedy: on 2 cores, beam search costs more than it gains live
    # Segments Whisper itself rates as probably not speech are dropped (hallucination guard).
    no_speech_threshold: float = 0.6
    log_prob_threshold: float = -1.0
    # Start decoding the final result this far into a pause, while VAD still waits to confirm
    # that speech ended (its min_silence_duration): the decode overlaps the wait. Not sooner:
    # gaps between words reach 0.1-0.2 s, and a decode started there, once speech resumes,
    # still holds one of the two decode threads (it cannot be stopped), so the real final
    # could queue behind it.
    early_final_after_s: float = 0.25
    # The shortest encoder window (see WhisperEngine._encode). Measured on 2 cores,
    # whisper-base: one decode of a 2 s question 1.0 s with the full 30 s, 0.3 s with 10 s.
    min_window_s: float = 10.0
    # Speech plainly in another language than the one set (Whisper's own language detection
    # gives that language at least this probability) is transcribed as the language heard:
    # forced into the set language, Whisper writes garbage or a translation of its own.
    # Detection is one decoder step on the encoder output the decode uses anyway: 15 ms, a
    # decode of the eval set's sentences 0.263 s against 0.247 s without (whisper-base, 2
    # cores). At 0.9, one espeak Vietnamese sentence in 44 on 8 kHz audio was taken for
    # another language (p 0.93); at 0.95 none of 352 utterances in three languages were, and
    # Japanese and piper English speech were still caught 100% and 98%
    # (`kaiwa eval languages`, docs/speech-eval.md). None: always the set language.
    follow_heard_language_p: float | None = 0.95


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str
    duration_s: float
    confidence: float


class WhisperEngine:
    """One loaded model and the threads that run it (shared by every stream)."""

    def __init__(self, model_dir: str, *, cpu_threads: int = 2, parallel: int = 2) -> None:
        # Two decodes at once, so a final never waits behind an interim already running (a
        # decode cannot be interrupted). Measured on 2 cores, 2 s of speech: one decode
        # 1.2 s; two at once 1.74 s for both, against 2.4 s one after the other.
        self.model = WhisperModel(
            model_dir,
            device="cpu",
            compute_type="int8",
            cpu_threads=cpu_threads,
            num_workers=parallel,
        )
        self.executor = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="whisper")

    def transcribe(self, audio: np.ndarray, options: WhisperOptions) -> Transcript:
        """Decode `audio` window by window (one window for anything up to 30 s); the language
        is detected on the first window when `options.language` is None."""
        language = options.language
        texts, probabilities = [], []
        for start in range(0, len(audio), WINDOW_SAMPLES):
            chunk = audio[start : start + WINDOW_SAMPLES]
            encoded = self._encode(chunk, options.min_window_s)
            if language is None or (start == 0 and options.follow_heard_language_p is not None):
                language = self._heard_language(encoded, language, options)
            text, probability = self._decode(encoded, len(chunk), language, options)
            if text:
                texts.append(text)
                probabilities.append(probability)
        joiner = "" if language in UNSPACED_LANGUAGES else " "
        return Transcript(
            text=joiner.join(texts),
            language=language or "",
            duration_s=len(audio) / SAMPLE_RATE,
            confidence=float(np.mean(probabilities)) if probabilities else 0.0,
        )

    def _encode(self, chunk: np.ndarray, min_window_s: float) -> ctranslate2.StorageView:
        # The encoder's cost follows its window, not the speech in it, and Whisper pads every
        # input to 30 s: a 2 s question cost as much as 30 s of speech. The window is cut to
        # the speech plus a margin of silence (the model was trained on padded input, and
        # with no silence after the last word it tends to repeat it), and never below
        # `min_window_s`: shorter windows cost accuracy for little more speed.
        speech_s = len(chunk) / SAMPLE_RATE
        window_s = min(WINDOW_S, max(min_window_s, math.ceil(speech_s + WINDOW_MARGIN_S)))
        frames = int(window_s * FRAMES_PER_S)
        features = self.model.feature_extractor(chunk)[:, :frames]
        return self.model.encode(pad_or_trim(features, frames))

    def detect_language(self, audio: np.ndarray, min_window_s: float = 10.0) -> tuple[str, float]:
        """The language Whisper hears in the first window of `audio`, with its probability."""
        return self._detect(self._encode(audio[:WINDOW_SAMPLES], min_window_s))

    def _detect(self, encoded: ctranslate2.StorageView) -> tuple[str, float]:
        # [(token "<|ja|>", probability), ...], most likely first.
        token, probability = self.model.model.detect_language(encoded)[0][0]
        return str(token[2:-2]), float(probability)

    def _heard_language(
        self, encoded: ctranslate2.StorageView, language: str | None, options: WhisperOptions
    ) -> str:
        """The language to decode in: the one detected when none is set, else the set one
        unless another is plainly heard (`follow_heard_language_p`)."""
        if not self.model.model.is_multilingual:
            return language or "en"  # an English-only model: nothing to detect
        heard, probability = self._detect(encoded)
        if language is None:
            return heard
        threshold = options.follow_heard_language_p
        if threshold is not None and heard != language and probability >= threshold:
            return heard
        return language

    def _decode(
        self,
        encoded: ctranslate2.StorageView,
        samples: int,
        language: str,
        options: WhisperOptions,
    ) -> tuple[str, float]:
        """(text, average token probability); no text where Whisper itself rates the window
        as probably not speech (its hallucination guard)."""
        tokenizer = Tokenizer(
            self.model.hf_tokenizer,
            self.model.model.is_multilingual,
            task="transcribe",
            language=language,
        )
        prompt = self.model.get_prompt(tokenizer, [], without_timestamps=True)
        # A bound on the text (about 4 times the fastest speech's tokens per second): a
        # decoder that loops on a phrase stops there instead of at the model's 448 tokens.
        max_tokens = MAX_TOKENS_BASE + int(MAX_TOKENS_PER_S * samples / SAMPLE_RATE)
        # One decode, with no fallback re-decodes at higher temperatures: each costs a full
        # decode, live captions cannot wait for them, and the guard below drops what fails.
        result = self.model.model.generate(
            encoded,
            [prompt],
            beam_size=options.beam_size,
            max_length=min(self.model.max_length, len(prompt) + max_tokens),
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=get_suppressed_tokens(tokenizer, [-1]),
        )[0]
        tokens = result.sequences_ids[0]
        # The score is the log probability per token; as in Whisper, the end token counts.
        avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
        if (
            result.no_speech_prob > options.no_speech_threshold
            and avg_logprob < options.log_prob_threshold
        ):
            return "", 0.0
        text = tokenizer.decode(tokens).strip()
        if language in UNSPACED_LANGUAGES:
            text = text.replace(" ", "")
        return text, float(np.exp(avg_logprob))

    async def transcribe_async(self, audio: np.ndarray, options: WhisperOptions) -> Transcript:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self.transcribe, audio, options)
