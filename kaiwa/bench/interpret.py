"""`kaiwa bench interpret`: how fast an English and a Japanese caller understand each other.

It starts a stack of its own (as `make up` does, with the default offline engines) and has
two synthetic callers, Alice (en) and Kenji (ja), hold a scripted exchange in an interpreted
room. Speech is made by the project's voices and spoken into always-on microphones, so the
interpreter hears silence between utterances as it would live. Everything is measured at
the callers, on arrival:

- caption lag: end of a spoken sentence → the listener receives the final source caption
  that completes it;
- translation lag: end of a spoken sentence → the first frame of its translated audio
  received by the other caller. The translated track is cut into stretches at its pauses,
  and in a turn voiced in as many stretches as it has sentences, the n-th stretch heard is
  the translation of the n-th sentence spoken. Where the counts differ (sentences merged
  into one stretch, or one cut in two) pairing would be a guess: such a turn's sentences
  count as said but not measured (`sentences_unmatched` counts the turns);
- completeness: stretches of translated speech heard, at most one per sentence, per
  sentence said;
- interim cadence: the intervals between caption updates while the speaker speaks;
- CPU per session: CPU seconds of the agent worker and the LLM server per second of call;
- drops: translated sentences the interpreter did not speak (its own counter);
- the ledger: the medians of each stage as the interpreter measured it (docs/operations.md),
  and end of speech → first frame published (final transcript, translation, first frame)
  beside the same at the caller for the last sentence of each turn, the one whose end of
  speech the interpreter times. Their difference is the network and playout.

With `--compare` the same exchange runs again against LiveKit's multi-user translator design
(kaiwa/bench/reference/multi_user_translator.py), on the same stack and engines, in the
reference worker started beside the stack (whose CPU is then measured instead of the product
worker's). The two are compared on the sentences both measured: a design that merges or
drops its hard sentences would otherwise be judged on its easy ones alone.

Last, the floor: each sentence's stages run alone on the idle stack (`stage_floor`), and
how far each measured lag is above it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from livekit import rtc
from openai import AsyncOpenAI

from agents import engines
from agents.stt.whisper_model import WhisperOptions
from agents.translate import Translator
from core.protocol import DROPPED_SENTENCES_ATTRIBUTE, FINAL, SOURCE_SEGMENT_ID, TRACK_ID
from kaiwa.caller import HeardAudio, ReceivedText, SyntheticCaller
from kaiwa.eval.speech import to_16k
from kaiwa.stack.config import StackConfig
from kaiwa.stack.services import Stack, ephemeral_config

from .common import (
    PRODUCT,
    REFERENCE,
    DesignWorker,
    cpu_seconds,
    create_room,
    ledger_medians,
    median,
    percentile,
    start_reference_worker,
    stored_lines,
)
from .reference import DESIGN

# A café exchange: short and two-sentence turns, so sentences are cut mid-utterance too.
SCRIPT: list[tuple[str, list[str]]] = [
    ("en", ["Good morning.", "I would like a cup of coffee, please."]),
    ("ja", ["おはようございます。", "ホットとアイス、どちらにしますか。"]),
    ("en", ["Hot, please.", "How much is it?"]),
    ("ja", ["三百円です。"]),
    ("en", ["Can I pay by card?"]),
    ("ja", ["はい、カードで払えます。", "少々お待ちください。"]),
    ("en", ["Thank you very much.", "Is there a table by the window?"]),
    ("ja", ["はい、窓のそばの席が空いています。"]),
    ("en", ["Great, I will sit there.", "What time do you close today?"]),
    ("ja", ["今日は夜九時に閉まります。", "ごゆっくりどうぞ。"]),
]
GAP_S = 0.3  # between the sentences of one turn
VOICED = 500  # peak sample value of a frame with speech in it
PAUSE_S = 0.3  # silence that separates two translated sentences on a track
TERMINALS = ".!?。！？"


@dataclass
class Turn:
    speaker: SyntheticCaller
    listener: SyntheticCaller
    sentences: list[str]
    started: float = 0.0
    sentence_ends: list[float] = field(default_factory=list)
    track_sid: str = ""
    until: float = 0.0
    # What was said, as sent (mono 16-bit, at `rate`).
    speech: np.ndarray[Any, Any] | None = None
    rate: int = 0


def turn_speech(language: str, sentences: list[str]) -> tuple[np.ndarray[Any, Any], int, list[int]]:
    """The turn's audio, its sample rate, and where each sentence ends (in samples)."""
    voice = engines.voice(language)
    gap = np.zeros(int(voice.sample_rate * GAP_S), dtype=np.int16)
    parts: list[np.ndarray[Any, Any]] = []
    ends: list[int] = []
    for sentence in sentences:
        if parts:
            parts.append(gap)
        parts.append(voice.synthesize(sentence))
        ends.append(sum(len(p) for p in parts))
    return np.concatenate(parts), voice.sample_rate, ends


def _onsets(frames: list[HeardAudio]) -> list[float]:
    """Arrival times of the first frame of each stretch of speech on a track."""
    onsets: list[float] = []
    last_voiced = -1e9
    for frame in frames:
        if frame.peak < VOICED:
            continue
        if frame.at - last_voiced > PAUSE_S:
            onsets.append(frame.at)
        last_voiced = frame.at
    return onsets


def _sentences_in(text: str) -> int:
    return max(1, sum(text.count(t) for t in TERMINALS))


async def _quiet(listener: SyntheticCaller, track: str, since: float, quiet_s: float) -> None:
    """Until the listener heard speech on `track` after `since` and then `quiet_s` of none."""
    deadline = time.monotonic() + 25
    while time.monotonic() < deadline:
        voiced = [
            h.at
            for h in listener.heard[-1000:]
            if h.track_name == track and h.at > since and h.peak >= VOICED
        ]
        if voiced and time.monotonic() - voiced[-1] > quiet_s:
            return
        await asyncio.sleep(0.1)


async def open_microphones(*callers: SyntheticCaller, timeout_s: float = 20.0) -> None:
    """Every caller's microphone open, and its audio reaching the server, before anyone
    speaks: an app opens its microphone on joining, not on the first word. LiveKit tells the
    others of a track once its media arrives, so each waits to be seen by another caller.
    (Opened on the first word, a lossy link's slow negotiation cut that word off.)"""
    await asyncio.gather(
        *(c.open_microphone(engines.voice(c.language).sample_rate) for c in callers)
    )
    deadline = time.monotonic() + timeout_s
    for caller in callers:
        sid = caller.microphone_sid
        others = [c for c in callers if c is not caller]
        while not all(any(sid in p.track_publications for p in other.remote()) for other in others):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{caller.name}'s microphone reached nobody in {timeout_s} s")
            await asyncio.sleep(0.05)


async def converse(
    alice: SyntheticCaller,
    kenji: SyntheticCaller,
    script: list[tuple[str, list[str]]] = SCRIPT,
) -> list[Turn]:
    """Alice (en) and Kenji (ja) take the script's turns, each turn spoken whole and its
    translation heard out before the next begins."""
    callers = {"en": (alice, kenji), "ja": (kenji, alice)}
    await open_microphones(alice, kenji)
    turns: list[Turn] = []
    for language, sentences in script:
        speaker, listener = callers[language]
        pcm, rate, ends = await asyncio.to_thread(turn_speech, language, sentences)
        turn = Turn(speaker, listener, sentences, started=time.monotonic(), speech=pcm, rate=rate)
        finished = await speaker.say(pcm, rate)
        turn.sentence_ends = [finished - (len(pcm) - end) / rate for end in ends]
        turn.track_sid = speaker.microphone_sid
        track = f"{turn.track_sid}-{listener.language}"
        await _quiet(listener, track, since=turn.started, quiet_s=1.5)
        turns.append(turn)
    for turn, following in zip(turns, turns[1:] + [None], strict=True):
        turn.until = following.started if following else float("inf")
    return turns


async def _exchange(
    cfg: StackConfig, stack: Stack, design: str, worker: DesignWorker
) -> dict[str, Any]:
    alice = SyntheticCaller(cfg.api_url, name="Alice", mode="interpret", language="en")
    if worker != PRODUCT:
        # Made first, so that its agent comes from the other worker; else Alice's join
        # makes it, dispatched to the product's.
        alice.room_name = f"bench-{design}-{uuid.uuid4().hex[:6]}"
        await create_room(cfg, alice.room_name, {"mode": "interpret"}, agent_name=worker.agent_name)
    await alice.join()
    kenji = SyntheticCaller(
        cfg.api_url, name="Kenji", mode="interpret", language="ja", room_name=alice.room_name
    )
    await kenji.join()
    agent_pid = stack.services[worker.service].proc.pid  # type: ignore[union-attr]
    llm_pid = stack.services["llm"].proc.pid  # type: ignore[union-attr]
    try:
        agent = await alice.wait_for_agent()
        await asyncio.sleep(2)  # people say hello a moment after joining, not at once
        cpu_before = cpu_seconds(agent_pid) + cpu_seconds(llm_pid)
        wall_before = time.monotonic()
        turns = await converse(alice, kenji)
        wall = time.monotonic() - wall_before
        cpu = cpu_seconds(agent_pid) + cpu_seconds(llm_pid) - cpu_before
        dropped = int(agent.attributes.get(DROPPED_SENTENCES_ATTRIBUTE, "0"))
        agents_in_room = len(alice.remote(rtc.ParticipantKind.PARTICIPANT_KIND_AGENT))
    finally:
        await kenji.leave()
        await alice.leave()
    room_name = alice.room_name or ""
    if agents_in_room != 1:
        raise RuntimeError(f"{agents_in_room} agents served the {design} room; expected one")
    figures = figures_of(turns)
    figures.update(
        {
            "call_s": round(wall, 1),
            "cpu_s_per_call_s": round(cpu / wall, 3),
            "dropped_sentences": dropped,
        }
    )
    if worker == PRODUCT:  # the reference design keeps no ledger
        lines = await stored_lines(
            cfg, room_name, done=lambda lines: len(lines) >= figures["sentences"]
        )
        pipeline = _pipeline_times(lines)
        heard = figures["turn_end_to_voice_s_median"]
        figures.update(
            {
                "ledger": ledger_medians(lines),
                "pipeline_s_median": median(pipeline),
                "network_and_playout_s_median": (
                    round(heard - statistics.median(pipeline), 3) if pipeline and heard else None
                ),
            }
        )
    return figures


def _pipeline_times(lines: list[dict[str, Any]]) -> list[float]:
    """End of speech → first frame published, per line and language, as the interpreter
    measured it: only lines that end an utterance have an end of speech to time from."""
    times = []
    for line in lines:
        timings = line["timings"]
        for key in timings:
            if key.startswith("translation.") and "final_transcript" in timings:
                language = key.split(".", 1)[1]
                if (first_frame := timings.get(f"first_frame.{language}")) is not None:
                    times.append(timings["final_transcript"] + timings[key] + first_frame)
    return times


def captions_of(turn: Turn, *, translated: bool) -> list[ReceivedText]:
    """The caption updates the listener received for this turn: of the speaker's own words,
    or of their translation into the listener's language."""
    language = turn.listener.language if translated else turn.speaker.language
    return [
        t
        for t in turn.listener.texts
        if turn.started <= t.at < turn.until
        and t.attributes.get(TRACK_ID) == turn.track_sid
        and (SOURCE_SEGMENT_ID in t.attributes) == translated
        and t.attributes.get("language", turn.speaker.language) == language
    ]


def voice_onsets(turn: Turn) -> list[float]:
    """When each stretch of the turn's translated voice began to arrive at the listener."""
    track = f"{turn.track_sid}-{turn.listener.language}"
    heard = [h for h in turn.listener.heard if h.track_name == track]
    return [t for t in _onsets(heard) if turn.started <= t < turn.until]


def figures_of(turns: list[Turn]) -> dict[str, Any]:
    caption_lags: list[float] = []
    translation_lags: list[float] = []
    # The last sentence of each turn: the one that ends the speaker's utterance.
    turn_end_lags: list[float] = []
    intervals: list[float] = []
    per_sentence: list[dict[str, Any]] = []
    unmatched = voiced = 0
    for number, turn in enumerate(turns):
        updates = captions_of(turn, translated=False)
        # Caption lag: each sentence against the final caption that completes it.
        # (A caption that holds two sentences completes both, the first one late.)
        covered = 0
        for caption in (u for u in updates if u.attributes.get(FINAL) == "true"):
            now_covered = min(covered + _sentences_in(caption.text), len(turn.sentence_ends))
            caption_lags += [caption.at - end for end in turn.sentence_ends[covered:now_covered]]
            covered = now_covered
        # Interim cadence: updates while the speaker is still speaking.
        speaking = [u.at for u in updates if u.at <= turn.sentence_ends[-1]]
        intervals += [b - a for a, b in zip(speaking, speaking[1:], strict=False)]
        # Translation lag: the n-th sentence heard against the n-th sentence spoken, in a
        # turn voiced in as many stretches as it has sentences. Where the counts differ
        # (sentences merged into one stretch, or one cut in two), the pairing would be a
        # guess: those sentences count as said, not as measured.
        onsets = voice_onsets(turn)
        voiced += min(len(onsets), len(turn.sentence_ends))
        paired = len(onsets) == len(turn.sentence_ends)
        unmatched += not paired
        lags = [onset - end for end, onset in zip(turn.sentence_ends, onsets, strict=False)]
        if paired:
            translation_lags += lags
            turn_end_lags.append(lags[-1])
        per_sentence += [
            {
                "turn": number,
                "sentence": index,
                "text": text,
                "translation_lag_s": round(lags[index], 3) if paired else None,
                "stretches_in_turn": len(onsets),
            }
            for index, text in enumerate(turn.sentences)
        ]
    said = sum(len(t.sentence_ends) for t in turns)
    return {
        "sentences": said,
        "caption_lag_s_median": median(caption_lags),
        "caption_lag_s_p95": percentile(caption_lags, 95),
        "translation_lag_s_median": median(translation_lags),
        "translation_lag_s_p95": percentile(translation_lags, 95),
        "translation_lags_measured": len(translation_lags),
        # Stretches of translated speech heard, at most one per sentence; per sentence said.
        "sentences_voiced": voiced,
        "completeness": round(voiced / said, 3) if said else None,
        "turn_end_to_voice_s_median": median(turn_end_lags),
        "sentences_unmatched": unmatched,
        "interim_interval_s_median": median(intervals),
        "interim_interval_s_p95": percentile(intervals, 95),
        "interim_interval_s_max": round(max(intervals), 3) if intervals else None,
        "per_sentence": per_sentence,
    }


def compared(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    """The two designs on the sentences both voiced in a form the bench could pair: a
    design that merges or drops its hard sentences is not judged on its easy ones alone."""

    def lags(figures: dict[str, Any]) -> dict[tuple[int, int], float]:
        return {
            (s["turn"], s["sentence"]): s["translation_lag_s"]
            for s in figures["per_sentence"]
            if s["translation_lag_s"] is not None
        }

    mine, other = lags(ours), lags(theirs)
    both = sorted(mine.keys() & other.keys())
    ours_median = median([mine[k] for k in both])
    theirs_median = median([other[k] for k in both])
    return {
        "sentences_both_voiced": len(both),
        "kaiwa_translation_lag_s_median": ours_median,
        "kaiwa_translation_lag_s_p95": percentile([mine[k] for k in both], 95),
        "other_translation_lag_s_median": theirs_median,
        "other_translation_lag_s_p95": percentile([other[k] for k in both], 95),
        "translation_lag_ratio_median": (
            round(ours_median / theirs_median, 3) if ours_median and theirs_median else None
        ),
    }


async def stage_floor(cfg: StackConfig) -> dict[str, Any]:
    """The translation lag's floor: each sentence's stages, alone on the idle stack, end to
    end, as the interpreter chains them for a sentence that ends an utterance.

    - final transcript: the VAD's silence window, or the final decode (started that far
      into the pause, `WhisperOptions.early_final_after_s`) where it ends later;
    - translation: one model call through the product's translator (its prompt prefix
      already cached by the exchange, as the interpreter's warm-up caches it in a call);
    - synthesis: the whole translation, as the product's voices synthesize it before its
      first frame goes out.

    Network and playout are not in it: the ledger's comparison with the caller gives them.
    """
    whisper = await asyncio.to_thread(engines.whisper)
    client = AsyncOpenAI(base_url=cfg.llm_base_url, api_key="local")
    translator = Translator(client, cfg.llm_model)
    early_s = WhisperOptions().early_final_after_s
    rows: list[dict[str, Any]] = []
    try:
        for number, (language, sentences) in enumerate(SCRIPT):
            target = "ja" if language == "en" else "en"
            speaker, listener = engines.voice(language), engines.voice(target)
            for index, text in enumerate(sentences):
                pcm = await asyncio.to_thread(speaker.synthesize, text)
                audio = to_16k(pcm, speaker.sample_rate).astype(np.float32) / 32768.0
                options = WhisperOptions(language=language)
                started = time.perf_counter()
                heard = await asyncio.to_thread(whisper.transcribe, audio, options)
                stt_s = time.perf_counter() - started
                started = time.perf_counter()
                translation = await translator.translate_one(heard.text, language, target)
                translate_s = time.perf_counter() - started
                started = time.perf_counter()
                await asyncio.to_thread(listener.synthesize, translation or heard.text)
                synthesis_s = time.perf_counter() - started
                final_s = max(engines.VAD_MIN_SILENCE_S, early_s + stt_s)
                rows.append(
                    {
                        "turn": number,
                        "sentence": index,
                        "decode_s": round(stt_s, 3),
                        "final_transcript_s": round(final_s, 3),
                        "translation_s": round(translate_s, 3),
                        "synthesis_s": round(synthesis_s, 3),
                        "floor_s": round(final_s + translate_s + synthesis_s, 3),
                    }
                )
    finally:
        await client.close()
    return {
        stage: median([row[stage] for row in rows])
        for stage in ("decode_s", "final_transcript_s", "translation_s", "synthesis_s", "floor_s")
    } | {"floor_s_p95": percentile([row["floor_s"] for row in rows], 95), "per_sentence": rows}


def distance_to_floor(figures: dict[str, Any], floor: dict[str, Any]) -> dict[str, Any]:
    """The caller's translation lag less the floor, sentence by sentence, where measured."""
    floors = {(row["turn"], row["sentence"]): row["floor_s"] for row in floor["per_sentence"]}
    gaps = [
        s["translation_lag_s"] - floors[(s["turn"], s["sentence"])]
        for s in figures["per_sentence"]
        if s["translation_lag_s"] is not None and (s["turn"], s["sentence"]) in floors
    ]
    return {"above_floor_s_median": median(gaps), "above_floor_s_p95": percentile(gaps, 95)}


async def run(compare: bool, keep_logs: Path | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="kaiwa-bench-") as state_dir:
        cfg = ephemeral_config(Path(state_dir))
        stack = Stack(cfg)
        try:
            await asyncio.to_thread(stack.start)
            results: dict[str, Any] = {"kaiwa": await _exchange(cfg, stack, "kaiwa", PRODUCT)}
            if compare:
                await asyncio.to_thread(start_reference_worker, stack)
                results[DESIGN] = await _exchange(cfg, stack, DESIGN, REFERENCE)
                results["compared"] = compared(results["kaiwa"], results[DESIGN])
            results["floor"] = await stage_floor(cfg)
            results["kaiwa"].update(distance_to_floor(results["kaiwa"], results["floor"]))
        finally:
            await asyncio.to_thread(stack.stop)
            if keep_logs is not None:
                shutil.copytree(cfg.logs_dir, keep_logs, dirs_exist_ok=True)
    results["engines"] = {"stt": "whisper-base", "llm": cfg.llm_model, "tts": "piper, Open JTalk"}
    results["machine_cpus"] = os.cpu_count()
    return results
