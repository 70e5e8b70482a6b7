"""The dialog agent's one logger: every module of agents/dialog logs as "kaiwa.dialog"."""

from __future__ import annotations

import logging

logger = logging.getLogger("kaiwa.dialog")
