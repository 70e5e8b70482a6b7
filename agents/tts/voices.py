"""Offline voices: text in, 16-bit mono PCM out, at the voice's own rate. Blocking calls.

piper for English, Open JTalk for Japanese, espeak-ng for Vietnamese and as a fallback for
any language it knows.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import wave
from pathlib import Path
from typing import Protocol

import numpy as np

from core.errors import UnsupportedLanguage


class Voice(Protocol):
    name: str
    sample_rate: int

    def synthesize(self, text: str) -> np.ndarray:
        """int16 mono samples at `sample_rate`."""
        ...


class PiperVoice:
    def __init__(self, model_dir: Path, onnx_name: str) -> None:
        from piper import PiperVoice as _Piper

        self._voice = _Piper.load(str(model_dir / onnx_name), str(model_dir / f"{onnx_name}.json"))
        self.name = f"piper:{onnx_name.removesuffix('.onnx')}"
        self.sample_rate = int(self._voice.config.sample_rate)

    def synthesize(self, text: str) -> np.ndarray:
        chunks = [c.audio_int16_array for c in self._voice.synthesize(text)]
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)


class OpenJTalkVoice:
    name = "openjtalk:mei"
    sample_rate = 48000

    def __init__(self) -> None:
        import pyopenjtalk

        self._tts = pyopenjtalk.tts
        self._tts("あ")  # loads the dictionary and voice now, not on the first call

    def synthesize(self, text: str) -> np.ndarray:
        samples, _rate = self._tts(text)
        return np.clip(samples, -32768, 32767).astype(np.int16)


class EspeakVoice:
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

    def synthesize(self, text: str) -> np.ndarray:
        wav_bytes = subprocess.run([*self._argv, text], capture_output=True, check=True).stdout
        with wave.open(io.BytesIO(wav_bytes), "rb") as wav:
            self.sample_rate = wav.getframerate()
            return np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16).copy()
