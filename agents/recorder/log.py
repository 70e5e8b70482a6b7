"""The recorder's one logger: every module of the package logs as "kaiwa.recorder"."""

from __future__ import annotations

import logging

logger = logging.getLogger("kaiwa.recorder")
