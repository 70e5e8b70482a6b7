"""Where things live: the repo, its per-checkout state, and user-level caches."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

# Per-checkout state (secrets, database, object store, logs). Ignored by git.
STATE_DIR = Path(os.environ.get("KAIWA_STATE_DIR", REPO_ROOT / ".kaiwa"))

# User-level caches shared by every clone: Go binaries, pip downloads, models.
CACHE_DIR = Path(os.environ.get("KAIWA_CACHE_DIR", Path.home() / ".cache" / "kaiwa"))
BIN_DIR = CACHE_DIR / "bin"
