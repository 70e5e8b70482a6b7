"""The installer names the step that failed and why, and skips what is already there."""

from __future__ import annotations

from pathlib import Path

import pytest

from kaiwa.stack import install as installer
from kaiwa.stack.process import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(installer, "BIN_DIR", tmp_path / "bin")
    monkeypatch.setattr(installer, "CACHE_DIR", tmp_path)
    return tmp_path


def test_unreachable_module_proxy_fails_with_the_step_and_a_hint(
    empty_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nothing listens on this port: the proxy is unreachable, as when offline.
    monkeypatch.setenv("GOPROXY", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("GOMODCACHE", str(empty_cache / "gomod"))
    monkeypatch.setenv("GOFLAGS", "")
    spec = installer.GoBinary("nothing", "example.com/kaiwa/nothing", "./cmd/nothing", "v0.0.1")
    with pytest.raises(installer.InstallError) as raised:
        installer.install_go_binary(spec)
    message = str(raised.value)
    assert "127.0.0.1" in message  # go's own words about the unreachable proxy are shown
    assert "install step 'go mod download nothing' failed" in message
    assert "Go module proxy is reachable" in message
    assert not (empty_cache / "bin" / "nothing").exists()


def test_installed_binary_at_the_pinned_version_is_not_rebuilt(
    empty_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "")
    spec = installer.GO_BINARIES["versitygw"]
    (empty_cache / "bin").mkdir()
    (empty_cache / "bin" / spec.name).write_text("#!/bin/sh\n")
    (empty_cache / "bin" / f"{spec.name}.version").write_text(spec.version)
    # No Go call happens: with no go on PATH, trying would raise InstallError.
    assert installer.install_go_binary(spec) == empty_cache / "bin" / spec.name
