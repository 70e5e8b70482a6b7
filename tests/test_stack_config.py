"""The local stack's configuration: ports, secrets and the effective LiveKit config."""

from __future__ import annotations

import socket
import stat
from pathlib import Path

import pytest

from kaiwa.stack.config import Ports, Secrets, StackConfig
from kaiwa.stack.process import PortInUseError, check_port_free, free_port
from kaiwa.stack.services import livekit_config

pytestmark = pytest.mark.unit


def test_taken_port_is_named_with_the_way_to_change_it() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(PortInUseError, match=rf"port {port} .*KAIWA_API_PORT=<port>"):
            check_port_free(port, "api")


def test_free_port_passes() -> None:
    check_port_free(free_port(), "api")


def test_ports_follow_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAIWA_API_PORT", "8123")
    assert Ports.from_env().api == 8123
    assert Ports.from_env().livekit == 7880


def test_dev_secrets_are_generated_once_and_private(tmp_path: Path) -> None:
    first = Secrets.load_or_create(tmp_path)
    again = Secrets.load_or_create(tmp_path)
    assert first == again
    assert len(first.livekit_api_secret) >= 32
    mode = stat.S_IMODE((tmp_path / "secrets.env").stat().st_mode)
    assert mode == 0o600
    assert Secrets.load_or_create(tmp_path / "other") != first


def test_effective_livekit_config_signs_webhooks_to_this_api_and_recorder(tmp_path: Path) -> None:
    ports = Ports(api=8555, recorder=8556)
    cfg = StackConfig(state_dir=tmp_path, secrets=Secrets.generate(), ports=ports)
    config = livekit_config(cfg)
    key = cfg.secrets.livekit_api_key
    assert config["keys"] == {key: cfg.secrets.livekit_api_secret}
    assert config["webhook"]["api_key"] == key
    assert config["webhook"]["urls"] == [
        "http://127.0.0.1:8555/livekit/webhook",
        "http://127.0.0.1:8556/livekit/webhook",
    ]
    assert config["bind_addresses"] == ["127.0.0.1"]
    assert config["rtc"]["node_ip"] == "127.0.0.1"
