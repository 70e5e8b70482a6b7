"""Real servers for tests, on free ports (PostgreSQL: kaiwa.stack.postgres)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from kaiwa.stack.config import StackConfig
from kaiwa.stack.services import Stack, ephemeral_config

# The catalogue's small LLM, for stacks whose tests check no word the model says.
SMALL_LLM = "qwen2.5-0.5b-instruct"


def make_stack_config(state_dir: Path, *, llm_model: str | None = None) -> StackConfig:
    """A test stack. Its LLM is the default one that users run, because tests assert what
    it says (with margins); a stack whose tests check no model content may take SMALL_LLM."""
    config = ephemeral_config(state_dir, env_name="test")
    return replace(config, llm_model=llm_model) if llm_model else config


@contextlib.contextmanager
def running_stack(config: StackConfig) -> Iterator[Stack]:
    """The whole stack as `make up` runs it, stopped however the block ends."""
    stack = Stack(config)
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
