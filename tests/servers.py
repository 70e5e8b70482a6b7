"""Real servers for tests, on free ports (PostgreSQL: kaiwa.stack.postgres)."""

from __future__ import annotations

from pathlib import Path

from kaiwa.stack.config import Ports, Secrets, StackConfig
from kaiwa.stack.process import free_port


def make_stack_config(state_dir: Path) -> StackConfig:
    ports = Ports(
        api=free_port(),
        livekit=free_port(),
        livekit_rtc_tcp=free_port(),
        livekit_rtc_udp=free_port(udp=True),
        redis=free_port(),
        s3=free_port(),
        llm=free_port(),
        agent_http=free_port(),
    )
    return StackConfig(
        state_dir=state_dir,
        secrets=Secrets.generate(),
        ports=ports,
        env_name="test",
        llm_model="qwen2.5-0.5b-instruct",  # the small model: tests check behaviour
    )
