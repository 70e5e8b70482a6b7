"""The API's one logger name: every module logs as "kaiwa.api"."""

from __future__ import annotations

import logging

logger = logging.getLogger("kaiwa.api")
