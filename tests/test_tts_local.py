"""Offline voices through the livekit-agents TTS interface, checked by transcribing them back."""

from __future__ import annotations

import subprocess
import sys
import time

import jiwer
import pytest
from livekit import rtc

from agents import engines
from agents.stt.whisper import WhisperSTT
from agents.tts.local import OUTPUT_RATE, LocalTTS
from agents.tts.voices import EspeakVoice
from core.errors import UnsupportedLanguage

pytestmark = pytest.mark.models


async def speak(language: str, text: str) -> list[rtc.AudioFrame]:
    tts = LocalTTS(engines.voice(language))
    return [event.frame async for event in tts.synthesize(text)]


async def hear(frames: list[rtc.AudioFrame], language: str) -> str:
    recognizer = WhisperSTT(engines.whisper("whisper-base"), engines.vad())
    event = await recognizer.recognize(frames, language=language)
    return event.alternatives[0].text if event.alternatives else ""


def seconds(frames: list[rtc.AudioFrame]) -> float:
    return sum(f.samples_per_channel for f in frames) / OUTPUT_RATE


async def test_english_round_trip() -> None:
    frames = await speak("en", "Could you recommend a quiet restaurant near the station?")
    assert {f.sample_rate for f in frames} == {OUTPUT_RATE}
    heard = await hear(frames, "en")
    reference = "could you recommend a quiet restaurant near the station"
    clean = jiwer.Compose([jiwer.ToLowerCase(), jiwer.RemovePunctuation(), jiwer.Strip()])  # type: ignore[no-untyped-call]
    assert jiwer.wer(reference, clean(heard)) <= 0.15, heard


async def test_japanese_round_trip() -> None:
    frames = await speak("ja", "駅の近くに静かなレストランはありますか。")
    heard = await hear(frames, "ja")
    reference = "駅の近くに静かなレストランはありますか"
    assert jiwer.cer(reference, heard.replace("。", "").replace("?", "")) <= 0.2, heard


async def test_vietnamese_falls_to_espeak() -> None:
    frames = await speak("vi", "Xin chào, hôm nay trời đẹp quá.")
    assert engines.voice("vi").name == "espeak-ng:vi"
    assert 1.0 < seconds(frames) < 5.0


def test_a_language_with_no_voice_is_a_clear_error() -> None:
    with pytest.raises(UnsupportedLanguage, match="no voice for language 'qqq'"):
        EspeakVoice("qqq")


async def test_streaming_speaks_the_first_sentence_before_the_rest_is_done() -> None:
    tts = LocalTTS(engines.voice("en")).streaming()
    stream = tts.stream()
    sentences = [
        "Good evening and welcome.",
        "Your table is ready, please follow me.",
        "The chef recommends the fish tonight.",
    ]
    started = time.monotonic()
    for sentence in sentences:
        stream.push_text(sentence + " ")
    stream.end_input()
    arrivals = []
    async for event in stream:
        arrivals.append((time.monotonic() - started, event.frame.samples_per_channel))
    await stream.aclose()
    first_audio = arrivals[0][0]
    finished = arrivals[-1][0]
    total_audio_s = sum(n for _, n in arrivals) / OUTPUT_RATE
    assert total_audio_s > 4.0
    assert first_audio < finished / 2, (first_audio, finished)


# A fresh process, so that no sentence another test synthesized has sized the voice's memory.
LONG_SENTENCE_MEMORY = """
from agents.models import ModelStore
from agents.tts.voices import PiperVoice

def rss_mib():
    status = open("/proc/self/status").read()
    return int(status.split("VmRSS:")[1].split()[0]) // 1024

voice = PiperVoice(ModelStore().path("piper-en-joe"), "en_US-joe-medium.onnx")
voice.synthesize("The train leaves at nine.")
before = rss_mib()
words = "the train to the station leaves at nine and the river is quiet this morning "
assert len(voice.synthesize((words * 6)[:450] + ".")) > 0
print(rss_mib() - before)
"""


def test_a_long_sentence_does_not_leave_the_voice_holding_its_memory() -> None:
    # Measured: onnxruntime's arena kept 374 MiB after this sentence; handed back, 38.
    done = subprocess.run(
        [sys.executable, "-c", LONG_SENTENCE_MEMORY],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    kept_mib = int(done.stdout.split()[-1])

    assert kept_mib < 150, done.stdout
