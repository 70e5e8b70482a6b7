"""Log lines are JSON objects with the structured fields passed in `extra`."""

from __future__ import annotations

import json
import logging

import pytest

from core.logs import JsonFormatter

pytestmark = pytest.mark.unit


def test_extra_fields_become_json_fields() -> None:
    record = logging.makeLogRecord(
        {
            "name": "kaiwa.api",
            "levelname": "WARNING",
            "msg": "webhook rejected",
            "reason": "body does not match its signature",
        }
    )
    line = json.loads(JsonFormatter().format(record))
    assert line["msg"] == "webhook rejected"
    assert line["reason"] == "body does not match its signature"
    assert line["level"] == "warning" and line["logger"] == "kaiwa.api"
