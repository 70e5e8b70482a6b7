"""A worker with a missing or corrupt model refuses to start, naming the file; so does the
benches' reference worker."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agents.models import ModelStore
from core.paths import REPO_ROOT

pytestmark = pytest.mark.models


def start_worker(models_dir: Path, module: str = "agents") -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "KAIWA_MODELS_DIR": str(models_dir),
        "REDIS_URL": "redis://127.0.0.1:1/0",
        "LIVEKIT_URL": "ws://127.0.0.1:1",
        "LIVEKIT_API_KEY": "k",
        "LIVEKIT_API_SECRET": "s",
    }
    return subprocess.run(
        [sys.executable, "-m", module],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_missing_model_stops_the_worker_at_start(tmp_path: Path) -> None:
    result = start_worker(tmp_path / "empty")
    assert result.returncode != 0
    assert "model file missing" in result.stderr and "whisper-base" in result.stderr
    assert "kaiwa models install whisper-base" in result.stderr


def test_corrupt_model_stops_the_worker_at_start(tmp_path: Path) -> None:
    installed = ModelStore().models_dir
    copy = tmp_path / "models"
    for name in ("whisper-base", "piper-en-joe"):
        shutil.copytree(installed / name, copy / name)
    weights = copy / "whisper-base" / "model.bin"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))  # same size; mtime changes, so it is re-hashed
    result = start_worker(copy)
    assert result.returncode != 0
    assert "model file corrupt" in result.stderr and "model.bin" in result.stderr


def test_the_reference_worker_also_stops_at_start_on_a_missing_model(tmp_path: Path) -> None:
    result = start_worker(tmp_path / "empty", module="kaiwa.bench.reference")
    assert result.returncode != 0
    assert "model file missing" in result.stderr and "whisper-base" in result.stderr
