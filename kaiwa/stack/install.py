"""Idempotent installer: apt packages, pinned Go binaries, the web app's npm packages.

The Python environment itself is made by the Makefile (this code runs inside it). Every step
checks first and does nothing when its result is already there.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from core.paths import BIN_DIR, CACHE_DIR, REPO_ROOT

from .process import StackError


class InstallError(StackError):
    pass


@dataclass(frozen=True)
class GoBinary:
    name: str
    module: str  # the module path, as the Go module proxy serves it
    package: str  # the main package inside the module
    version: str
    cgo: bool = False


GO_BINARIES = {
    "livekit-server": GoBinary(
        "livekit-server", "github.com/livekit/livekit-server", "./cmd/server", "v1.13.5"
    ),
    "versitygw": GoBinary("versitygw", "github.com/versity/versitygw", "./cmd/versitygw", "v1.7.0"),
    # The SIP bridge. v1.8.0 is the newest livekit/sip version the module proxy serves here
    # (v1.9.0 to v1.11.x answer 403); it needs cgo for libopus and soxr.
    "livekit-sip": GoBinary(
        "livekit-sip", "github.com/livekit/sip", "./cmd/livekit-sip", "v1.8.0", cgo=True
    ),
}

# apt package -> a file it installs, used to tell whether it is there.
APT_PACKAGES = {
    "redis-server": "/usr/bin/redis-server",
    "postgresql": "/usr/lib/postgresql",
    "espeak-ng": "/usr/bin/espeak-ng",
    # The admin console's browser test drives Debian's Chromium through Playwright (no
    # browser download); the Noto CJK fonts make its Japanese legible in screenshots.
    "chromium": "/usr/bin/chromium",
    "fonts-noto-cjk": "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    # livekit-sip links libopus and soxr through cgo (its README's build dependencies).
    "pkg-config": "/usr/bin/pkg-config",
    "libopus-dev": "/usr/include/opus/opus.h",
    "libopusfile-dev": "/usr/include/opus/opusfile.h",
    "libsoxr-dev": "/usr/include/soxr.h",
    # SIPp, the SIP peer the phone-call tests dial the bridge with.
    "sip-tester": "/usr/bin/sipp",
    # The Prometheus server the metrics test scrapes the stack with (not needed to run it).
    "prometheus": "/usr/bin/prometheus",
    # The packet-loss test's lossy link: a network namespace and nftables rules in it.
    "iproute2": "/usr/sbin/ip",
    "nftables": "/usr/sbin/nft",
}
SIP_BUILD_PACKAGES = ["pkg-config", "libopus-dev", "libopusfile-dev", "libsoxr-dev"]
PROFILES = {
    "up": ["redis-server", "espeak-ng", *SIP_BUILD_PACKAGES],
    "test": [
        "redis-server",
        "postgresql",
        "espeak-ng",
        "chromium",
        "fonts-noto-cjk",
        *SIP_BUILD_PACKAGES,
        "sip-tester",
        "prometheus",
        "iproute2",
        "nftables",
    ],
}
# Which set of offline models each profile installs (agents/models/catalog.py PROFILES).
MODEL_PROFILES = {"up": "default", "test": "test"}


def say(message: str) -> None:
    print(f"==> {message}", flush=True)


def run_step(
    step: str,
    argv: list[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    hint: str = "",
) -> None:
    """Run one install command with its output streamed, and a clear error if it fails."""
    started = time.monotonic()
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        text=True,
    )
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        tail = (tail + [line])[-20:]
        print(f"    {line}", flush=True)
    if proc.wait() != 0:
        raise InstallError(
            f"install step '{step}' failed (exit {proc.returncode}).\n"
            + "\n".join(f"    {t}" for t in tail[-8:])
            + (f"\n{hint}" if hint else "")
        )
    say(f"{step}: done in {time.monotonic() - started:.0f} s")


def install_apt(packages: list[str]) -> None:
    missing = [p for p in packages if not Path(APT_PACKAGES[p]).exists()]
    if not missing:
        return
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
    if prefix and not shutil.which("sudo"):
        raise InstallError(f"missing system packages {missing}: install them with apt-get as root")
    hint = "Check that Debian's package archive is reachable (apt-get update)."
    say(f"apt: installing {' '.join(missing)}")
    run_step("apt-get update", [*prefix, "apt-get", "update", "-q"], hint=hint)
    run_step(
        f"apt-get install {' '.join(missing)}",
        [*prefix, "apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
        env={"DEBIAN_FRONTEND": "noninteractive"},
        hint=hint,
    )


def install_go_binary(spec: GoBinary) -> Path:
    """Fetch the module at its pinned version and build its main package.

    Not `go install module/cmd@version`: that also asks the proxy for the module's version
    list (to warn about deprecation), which fails where the proxy serves only some versions.
    Building inside the fetched module uses its own go.mod and go.sum, as `go install` does.
    """
    target = BIN_DIR / spec.name
    stamp = BIN_DIR / f"{spec.name}.version"
    if target.exists() and stamp.exists() and stamp.read_text().strip() == spec.version:
        return target
    go = shutil.which("go")
    if go is None:
        raise InstallError(f"Go is needed to build {spec.name}; install Go 1.26 or newer")
    BIN_DIR.mkdir(parents=True, exist_ok=True)
    say(f"go: building {spec.name} {spec.version} (first time: a few minutes on 2 cores)")
    env = {"CGO_ENABLED": "1" if spec.cgo else "0", "GOFLAGS": "-mod=mod"}
    hint = "Check that the Go module proxy is reachable (go env GOPROXY)."
    with tempfile.TemporaryDirectory(dir=CACHE_DIR) as work:
        source = Path(work) / "src"
        # The module cache is read-only: build in a writable copy of the module.
        shutil.copytree(download_module(go, spec, env, hint), source)
        for path in [source, *source.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)
        built = Path(work) / spec.name
        run_step(
            f"go build {spec.name}",
            [
                go,
                "build",
                "-x" if os.environ.get("KAIWA_VERBOSE") else "-v",
                "-trimpath",
                "-o",
                str(built),
                spec.package,
            ],
            env=env,
            cwd=source,
            hint=hint,
        )
        shutil.move(built, target)
    stamp.write_text(spec.version)
    return target


def build_repo_go(name: str) -> Path:
    """Build the Go program in infra/<name> (its own go.mod and go.sum) once per version of
    its source; the binary lives in the user-level cache like the pinned ones."""
    source = REPO_ROOT / "infra" / name
    files = sorted(p for p in source.iterdir() if p.suffix == ".go" or p.name.startswith("go."))
    digest = hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in files)).hexdigest()
    target = BIN_DIR / name
    stamp = BIN_DIR / f"{name}.version"
    if target.exists() and stamp.exists() and stamp.read_text().strip() == digest:
        return target
    go = shutil.which("go")
    if go is None:
        raise InstallError(f"Go is needed to build {name}; install Go 1.26 or newer")
    BIN_DIR.mkdir(parents=True, exist_ok=True)
    say(f"go: building {name} (first time: a few minutes on 2 cores)")
    built = BIN_DIR / f"{name}.building"
    run_step(
        f"go build {name}",
        [go, "build", "-v", "-trimpath", "-o", str(built), "."],
        env={"CGO_ENABLED": "0"},
        cwd=source,
        hint="Check that the Go module proxy is reachable (go env GOPROXY).",
    )
    built.replace(target)
    stamp.write_text(digest)
    return target


def download_module(go: str, spec: GoBinary, env: dict[str, str], hint: str) -> Path:
    """Fetch the module's source into the module cache; return its folder there."""
    step = f"go mod download {spec.name}"
    say(step)
    fetched = subprocess.run(
        [go, "mod", "download", "-json", f"{spec.module}@{spec.version}"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        info = json.loads(fetched.stdout)
    except ValueError:
        info = {}
    if fetched.returncode != 0 or "Dir" not in info:
        reason = info.get("Error") or fetched.stderr.strip() or f"exit {fetched.returncode}"
        raise InstallError(f"install step '{step}' failed: {reason}\n{hint}")
    return Path(info["Dir"])


def install_web() -> None:
    web = REPO_ROOT / "web"
    lock = web / "package-lock.json"
    modules = web / "node_modules"
    stamp = modules / ".kaiwa-installed"
    if not lock.exists():
        return
    if not (stamp.exists() and stamp.stat().st_mtime >= lock.stat().st_mtime):
        say("npm: installing the web app's packages")
        run_step(
            "npm ci",
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=web,
            env={"npm_config_cache": str(CACHE_DIR / "npm")},
            hint="Check that the npm registry is reachable (npm ping).",
        )
        stamp.touch()
    dist = web / "dist" / "index.html"
    pages = [*web.glob("*.html"), *web.glob("*.css"), web / "package.json"]
    sources = [p for p in (web / "src").rglob("*") if p.is_file()] + pages
    if not dist.exists() or max(p.stat().st_mtime for p in sources) > dist.stat().st_mtime:
        run_step("build the web app", ["npm", "run", "--silent", "build"], cwd=web)


def install_models(profile: str) -> None:
    from agents.models import CATALOG, ModelError, ModelStore
    from agents.models.catalog import PROFILES as MODEL_SETS

    store = ModelStore(CACHE_DIR)
    for name in MODEL_SETS[profile]:
        try:
            store.install(CATALOG[name], say=say)
        except ModelError as exc:
            raise InstallError(f"install step 'model {name}' failed: {exc}") from exc


def install(profile: str = "up") -> None:
    started = time.monotonic()
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    install_apt(PROFILES[profile])
    for spec in GO_BINARIES.values():
        install_go_binary(spec)
    install_models(MODEL_PROFILES[profile])
    install_web()
    elapsed = time.monotonic() - started
    if elapsed > 1:
        say(f"install ({profile}): everything in place after {elapsed:.0f} s")
