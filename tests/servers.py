"""Real servers for tests, on free ports (PostgreSQL: kaiwa.stack.postgres)."""

from __future__ import annotations

from pathlib import Path

from kaiwa.stack.config import StackConfig
from kaiwa.stack.services import ephemeral_config


def make_stack_config(state_dir: Path) -> StackConfig:
    # The small model: tests check behaviour.
    return ephemeral_config(state_dir, env_name="test", llm_model="qwen2.5-0.5b-instruct")
