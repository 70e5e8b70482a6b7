"""`make up` keeps its services running: one that dies is started again, one stopped on
purpose stays stopped, one that keeps dying stops the stack with its log, and the SIP bridge
leaves a LiveKit node that is gone."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from dataclasses import replace
from functools import partial
from pathlib import Path

import pytest
import redis
import yaml

from kaiwa.stack.process import ManagedProcess, StackError
from kaiwa.stack.services import (
    MAX_RESTARTS,
    Stack,
    ephemeral_config,
    livekit_service,
    redis_service,
    sip_health,
    sip_service,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    cfg = ephemeral_config(tmp_path)
    running = Stack(cfg, with_agent=False)
    service = redis_service(cfg)
    running.services[service.name] = service
    service.start()
    service.wait_ready()
    try:
        yield running
    finally:
        running.stop()


def crash(service: ManagedProcess) -> int:
    assert service.proc is not None
    pid = service.proc.pid
    service.proc.send_signal(signal.SIGKILL)
    service.proc.wait()
    return pid


def test_a_service_that_dies_is_restarted_and_serves_again(stack: Stack) -> None:
    service = stack.services["redis"]
    client = redis.Redis(port=stack.cfg.ports.redis, socket_timeout=2)
    client.set("kept", "yes")
    client.save()  # acknowledged and on disk: it must survive the crash
    old_pid = crash(service)
    restarted: list[tuple[str, int]] = []
    stack.supervise(on_restart=lambda s, code: restarted.append((s.name, code)))
    assert restarted == [("redis", -signal.SIGKILL)]
    assert service.running() and service.proc is not None and service.proc.pid != old_pid
    assert client.get("kept") == b"yes"


def test_a_service_stopped_on_purpose_stays_stopped(stack: Stack) -> None:
    service = stack.services["redis"]
    service.stop()
    stack.supervise(on_restart=lambda s, code: pytest.fail(f"{s.name} restarted"))
    assert not service.running()
    service.start()  # and a later start is supervised again
    service.wait_ready()
    crash(service)
    restarted: list[str] = []
    stack.supervise(on_restart=lambda s, code: restarted.append(s.name))
    assert restarted == ["redis"] and service.running()


def test_a_crash_loop_stops_the_stack_with_the_service_log(stack: Stack) -> None:
    service = stack.services["redis"]
    for _ in range(MAX_RESTARTS):
        crash(service)
        stack.supervise(on_restart=lambda s, code: None)
    crash(service)
    with pytest.raises(StackError, match=rf"redis exited {MAX_RESTARTS + 1} times .*redis"):
        stack.supervise(on_restart=lambda s, code: None)


def test_the_sip_bridge_moves_off_a_livekit_node_that_is_gone(tmp_path: Path) -> None:
    """The bridge joins rooms through the one node its `ws_url` names, and does not exit
    when that node dies: supervision starts it again on a node that answers."""
    cfg = replace(ephemeral_config(tmp_path), livekit_nodes=2)
    stack = Stack(cfg, with_agent=False)
    try:
        for build in (redis_service, livekit_service, partial(livekit_service, node=2)):
            service = build(cfg)
            stack.services[service.name] = service
            service.start()
            service.wait_ready()
        bridge = sip_service(cfg)
        stack.services["sip"] = bridge
        bridge.start()
        bridge.wait_ready()
        first, second = cfg.livekit_node_urls
        moves: list[tuple[str, str]] = []
        stack.supervise(
            on_restart=lambda s, code: None, on_move=lambda s, u: moves.append((s.name, u))
        )
        assert moves == []  # its node answers: left alone

        # The first node is gone for good (stopped, so supervision does not start it again).
        stack.services["livekit"].stop()
        stack.supervise(
            on_restart=lambda s, code: None, on_move=lambda s, u: moves.append((s.name, u))
        )
        assert moves == [("sip", second)]
        moved = stack.services["sip"]
        assert moved is not bridge and moved.running() and not bridge.running()
        config = yaml.safe_load((cfg.state_dir / "livekit-sip.effective.yaml").read_text())
        assert config["ws_url"] == second != first
        assert sip_health(cfg) in (200, 429)
    finally:
        stack.stop()
