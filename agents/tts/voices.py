"""Offline voices: text in, 16-bit mono PCM out, at the voice's own rate.

piper for English, Open JTalk for Japanese, espeak-ng for Vietnamese and as a fallback for
any language it knows. `synthesize` blocks; `synthesize_async` runs it on the voice's own
thread. A voice is loaded once per worker process and shared by every call
(agents/engines.py), so its one thread makes "one synthesis at a time per voice" hold across
calls: these engines are not safe to call concurrently.
"""

from __future__ import annotations

import asyncio
import io
import shutil
import subprocess
import wave
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from core.errors import UnsupportedLanguage


class Voice(Protocol):
    name: str
    sample_rate: int

    def synthesize(self, text: str) -> np.ndarray:
        """int16 mono samples at `sample_rate`."""
        ...

    async def synthesize_async(self, text: str) -> np.ndarray:
        """`synthesize` on the voice's own thread."""
        ...


class OwnThread:
    """The one thread a voice synthesizes on, whichever call asks."""

    name: str

    def _start_thread(self) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"tts-{self.name}")

    def synthesize(self, text: str) -> np.ndarray:
        raise NotImplementedError

    async def synthesize_async(self, text: str) -> np.ndarray:
        return await asyncio.get_running_loop().run_in_executor(self._thread, self.synthesize, text)


class ArenaReleasingSession:
    """An onnxruntime session that hands its arena's unused memory back after every run.

    By default onnxruntime keeps the memory of the largest run so far, and a voice's run
    grows with its sentence: a worker kept what its longest sentence took for good, and
    stepped up whenever a longer one came (the soak's worker, docs/operations.md). Forty
    sentences of 20 to 450 characters took piper from 140 to 793 MiB; handing the memory
    back, to 271 MiB, with synthesis about a tenth slower (0.25 s per 100 characters
    instead of 0.22).
    """

    def __init__(self, session: Any) -> None:
        import onnxruntime

        self._session = session
        self._options = onnxruntime.RunOptions()
        self._options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")

    def run(self, output_names: Any, input_feed: Any) -> Any:
        return self._session.run(output_names, input_feed, self._options)


class PiperVoice(OwnThread):
    def __init__(self, model_dir: Path, onnx_name: str) -> None:
        from piper import PiperVoice as _Piper

        self._voice = _Piper.load(str(model_dir / onnx_name), str(model_dir / f"{onnx_name}.json"))
        self._voice.session = ArenaReleasingSession(self._voice.session)
        self.name = f"piper:{onnx_name.removesuffix('.onnx')}"
        self.sample_rate = int(self._voice.config.sample_rate)
        self._start_thread()

    def synthesize(self, text: str) -> np.ndarray:
        chunks = [c.audio_int16_array for c in self._voice.synthesize(text)]
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)


class OpenJTalkVoice(OwnThread):
    name = "openjtalk:mei"
    sample_rate = 48000

    def __init__(self) -> None:
        import pyopenjtalk

        self._tts = pyopenjtalk.tts
        self._tts("あ")  # loads the dictionary and voice now, not on the first call
        self._start_thread()

    def synthesize(self, text: str) -> np.ndarray:
        samples, _rate = self._tts(text)
        return np.clip(samples, -32768, 32767).astype(np.int16)


class EspeakVoice(OwnThread):
    sample_rate = 22050

    def __init__(self, language: str) -> None:
        binary = shutil.which("espeak-ng")
        if binary is None:
            raise UnsupportedLanguage(
                "voice", language, "espeak-ng is not installed (apt-get install espeak-ng)"
            )
        known = subprocess.run([binary, "--voices"], capture_output=True, text=True, check=True)
        codes = {line.split()[1] for line in known.stdout.splitlines()[1:] if line.split()}
        if language not in codes:
            raise UnsupportedLanguage("voice", language)
        self._argv = [binary, "-v", language, "--stdout"]
        self.name = f"espeak-ng:{language}"
        self._start_thread()

    def synthesize(self, text: str) -> np.ndarray:
        wav_bytes = subprocess.run([*self._argv, text], capture_output=True, check=True).stdout
        with wave.open(io.BytesIO(wav_bytes), "rb") as wav:
            self.sample_rate = wav.getframerate()
            return np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16).copy()
