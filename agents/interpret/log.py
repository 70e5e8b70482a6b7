"""The interpreter's one logger name: every module logs as "kaiwa.interpret"."""

from __future__ import annotations

import logging

logger = logging.getLogger("kaiwa.interpret")
