"""What `kaiwa models` prints: each model and bundled engine, installed, verified, loadable."""

from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass

from .catalog import CATALOG
from .store import ModelStore

# The runtime library each role's models load with.
ROLE_LIBRARY = {"stt": "faster_whisper", "llm": "xllamacpp", "tts": "piper"}


@dataclass(frozen=True)
class EngineRow:
    name: str
    role: str
    languages: str
    installed: bool
    verified: bool
    loadable: bool
    detail: str


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


# Engines whose models ship inside the package that runs them: installed means loadable.
BUNDLED = (
    ("silero-vad", "vad", "*", "livekit.plugins.silero"),
    ("livekit-eot", "turn", "en,ja,+12", "livekit.local_inference"),
    ("openjtalk-ja", "tts", "ja", "pyopenjtalk"),
)


def rows(store: ModelStore) -> list[EngineRow]:
    result = []
    for spec in CATALOG.values():
        status = store.status(spec)
        library = ROLE_LIBRARY[spec.role]
        loadable = status.verified and _importable(library)
        detail = status.detail if status.installed else f"run `kaiwa models install {spec.name}`"
        if status.verified and not loadable:
            detail = f"python package {library!r} missing; run `make install`"
        result.append(
            EngineRow(
                spec.name,
                spec.role,
                ",".join(spec.languages),
                status.installed,
                status.verified,
                loadable,
                detail,
            )
        )
    for name, role, languages, module in BUNDLED:
        ok = _importable(module)
        result.append(
            EngineRow(
                name,
                role,
                languages,
                ok,
                ok,
                ok,
                "inside its package" if ok else f"{module} missing",
            )
        )
    espeak = shutil.which("espeak-ng")
    result.append(
        EngineRow(
            "espeak-ng",
            "tts",
            "*",
            bool(espeak),
            bool(espeak),
            bool(espeak),
            espeak or "apt-get install espeak-ng",
        )
    )
    return result


def table(store: ModelStore) -> str:
    header = f"{'model':<24}{'role':<6}{'languages':<11}{'installed':<11}{'verified':<10}"
    header += f"{'loadable':<10}detail"
    lines = [header]
    for r in rows(store):
        yes = {True: "yes", False: "no"}
        lines.append(
            f"{r.name:<24}{r.role:<6}{r.languages:<11}{yes[r.installed]:<11}"
            f"{yes[r.verified]:<10}{yes[r.loadable]:<10}{r.detail}"
        )
    return "\n".join(lines)
