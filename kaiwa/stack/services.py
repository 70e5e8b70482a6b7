"""The services of one stack, each a ManagedProcess with a readiness check.

Order matters and is encoded in `Stack.start`: Redis, LiveKit (needs Redis), the SIP bridge
(needs both), the S3 server, the API (needs LiveKit, Redis and S3), the agent worker (needs
LiveKit and Redis).
"""

from __future__ import annotations

import shutil
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import redis
import yaml

from core.paths import BIN_DIR, REPO_ROOT
from core.presence import registered_workers
from core.settings import S3Settings
from core.storage import s3_client as core_s3_client

from .config import Ports, Secrets, StackConfig
from .process import (
    ManagedProcess,
    StackError,
    check_port_free,
    free_port,
    free_udp_range,
    tcp_open,
)

LIVEKIT_BINARY = "livekit-server"
SIP_BINARY = "livekit-sip"
S3_BINARY = "versitygw"
# A service restarted this many times within the window is crash-looping: the stack stops.
MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0


def binary(name: str) -> str:
    path = BIN_DIR / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found:
        return found
    raise StackError(f"{name} is not installed; run `kaiwa install` (or `make up`) first")


def http_ok(url: str, timeout_s: float = 1.0) -> bool:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return bool(response.status == 200)


def livekit_config(cfg: StackConfig, node: int = 1) -> dict[str, Any]:
    """The repo-root livekit.yaml with this stack's ports (node `node`'s own), keys, Redis
    and webhook URL. Nodes share everything but their ports; their ids are random per start,
    so nothing is keyed on them."""
    base: dict[str, Any] = yaml.safe_load((REPO_ROOT / "livekit.yaml").read_text())
    p = cfg.ports
    port, tcp, udp, metrics = (
        (p.livekit, p.livekit_rtc_tcp, p.livekit_rtc_udp, p.livekit_metrics)
        if node == 1
        else (p.livekit_2, p.livekit_2_rtc_tcp, p.livekit_2_rtc_udp, p.livekit_2_metrics)
    )
    base["port"] = port
    base["prometheus_port"] = metrics
    base.setdefault("rtc", {}).update(tcp_port=tcp, udp_port=udp)
    if cfg.livekit_link_ip:
        base["bind_addresses"] = [*base.get("bind_addresses", []), cfg.livekit_link_ip]
        # A node IP rewrites every media candidate to that one address, whatever socket it
        # stands for: replies to the link then left from the loopback socket and never
        # arrived. Without it each interface's own address is offered.
        base["rtc"].pop("node_ip", None)
    base["redis"] = {"address": f"127.0.0.1:{cfg.ports.redis}"}
    base["keys"] = {cfg.secrets.livekit_api_key: cfg.secrets.livekit_api_secret}
    base.setdefault("webhook", {}).update(
        api_key=cfg.secrets.livekit_api_key,
        # The API keeps history; the recorder starts recording when a room starts.
        urls=[f"{cfg.api_url}/livekit/webhook", f"{cfg.recorder_url}/livekit/webhook"],
    )
    return base


def ephemeral_config(state_dir: Path, **overrides: Any) -> StackConfig:
    """A throwaway stack (tests, benches): free ports, fresh secrets, its own state folder."""
    ports = Ports(
        **{
            name: free_port(udp=name in ("livekit_rtc_udp", "livekit_2_rtc_udp", "sip"))
            for name in Ports.__dataclass_fields__
        }
    )
    config = StackConfig(
        state_dir=state_dir,
        secrets=Secrets.generate(),
        ports=ports,
        # 20 calls' worth: each takes one even port, held 30 s after it ends.
        sip_rtp_ports=free_udp_range(40),
    )
    # One client drives every call of a test or a bench from one address, many at once (the
    # capacity tests fill a worker): the per-address call cap is tested on the API itself.
    extra_env = {"CALLS_PER_ADDRESS": "100", **overrides.pop("extra_env", {})}
    return replace(config, extra_env=extra_env, **overrides)


def redis_service(cfg: StackConfig) -> ManagedProcess:
    data = cfg.data_dir / "redis"
    data.mkdir(parents=True, exist_ok=True)
    port = cfg.ports.redis
    return ManagedProcess(
        name="redis",
        argv=[
            binary("redis-server"),
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--dir",
            str(data),
            "--appendonly",
            "yes",
            "--save",
            "",
            "--daemonize",
            "no",
        ],
        log_path=cfg.logs_dir / "redis.log",
        ready=lambda: bool(redis.Redis(port=port, socket_timeout=1).ping()),
    )


def livekit_service(cfg: StackConfig, node: int = 1) -> ManagedProcess:
    name = "livekit" if node == 1 else f"livekit-{node}"
    config_path = cfg.state_dir / f"{name}.effective.yaml"
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.touch(mode=0o600)  # it holds the API secret
    config_path.write_text(yaml.safe_dump(livekit_config(cfg, node)))
    url = cfg.livekit_node_urls[node - 1].replace("ws://", "http://")
    return ManagedProcess(
        name=name,
        argv=[binary(LIVEKIT_BINARY), "--config", str(config_path)],
        log_path=cfg.logs_dir / f"{name}.log",
        ready=lambda: http_ok(f"{url}/"),
        # On SIGTERM the server waits for rooms to empty; the agents are gone by then.
        stop_timeout_s=3,
    )


def sip_config(cfg: StackConfig, ws_url: str) -> dict[str, Any]:
    """infra/livekit-sip.yaml with this stack's keys, LiveKit node and Redis, ports and RTP
    range."""
    base: dict[str, Any] = yaml.safe_load((REPO_ROOT / "infra" / "livekit-sip.yaml").read_text())
    base.update(
        api_key=cfg.secrets.livekit_api_key,
        api_secret=cfg.secrets.livekit_api_secret,
        ws_url=ws_url,
        # The same Redis as livekit-server: the two talk through it (psrpc).
        redis={"address": f"127.0.0.1:{cfg.ports.redis}"},
        sip_port=cfg.ports.sip,
        health_port=cfg.ports.sip_health,
        rtp_port=cfg.sip_rtp_ports,
    )
    return base


def sip_service(cfg: StackConfig, ws_url: str | None = None) -> ManagedProcess:
    """The SIP bridge, joining rooms through `ws_url` (the first node unless given)."""
    ws_url = ws_url or cfg.livekit_url
    config_path = cfg.state_dir / "livekit-sip.effective.yaml"
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.touch(mode=0o600)  # it holds the API secret
    config_path.chmod(0o600)
    config_path.write_text(yaml.safe_dump(sip_config(cfg, ws_url)))
    return ManagedProcess(
        name="sip",
        argv=[binary(SIP_BINARY), "--config", str(config_path)],
        # The node its config names, for supervision to move it off a dead one.
        env={"LIVEKIT_URL": ws_url},
        log_path=cfg.logs_dir / "sip.log",
        # 200 once it serves calls; 429 means busy, which is up.
        ready=lambda: sip_health(cfg) in (200, 429),
        # Calls in progress are lost either way: SIP has no resume.
        stop_timeout_s=3,
    )


def sip_health(cfg: StackConfig) -> int:
    """The bridge's health port: 200 ok, 429 over its CPU limit, 503 not started."""
    try:
        with urllib.request.urlopen(cfg.sip_health_url, timeout=1.0) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def s3_service(cfg: StackConfig) -> ManagedProcess:
    root = cfg.data_dir / "s3"
    for sub in ("buckets", "iam", "meta"):
        (root / sub).mkdir(parents=True, exist_ok=True)

    def ready() -> bool:
        if not tcp_open(cfg.ports.s3):
            return False
        ensure_bucket(cfg)
        return True

    return ManagedProcess(
        name="s3",
        argv=[
            binary(S3_BINARY),
            "--port",
            f"127.0.0.1:{cfg.ports.s3}",
            "--iam-dir",
            str(root / "iam"),
            # Metadata in a sidecar folder, not xattrs: works on any filesystem (tmpfs too).
            "posix",
            "--sidecar",
            str(root / "meta"),
            str(root / "buckets"),
        ],
        env={
            "ROOT_ACCESS_KEY": cfg.secrets.s3_access_key,
            "ROOT_SECRET_KEY": cfg.secrets.s3_secret_key,
        },
        log_path=cfg.logs_dir / "s3.log",
        ready=ready,
    )


def s3_client(cfg: StackConfig) -> Any:
    """A client of the stack's S3 server, built as the API and the recorder build theirs."""
    settings = S3Settings(
        s3_endpoint_url=cfg.s3_endpoint_url,
        s3_access_key=cfg.secrets.s3_access_key,
        s3_secret_key=cfg.secrets.s3_secret_key,
        s3_bucket=cfg.s3_bucket,
    )
    return core_s3_client(settings, max_attempts=2)


def ensure_bucket(cfg: StackConfig) -> None:
    client = s3_client(cfg)
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    if cfg.s3_bucket not in existing:
        client.create_bucket(Bucket=cfg.s3_bucket)


def llm_service(cfg: StackConfig) -> ManagedProcess:
    return ManagedProcess(
        name="llm",
        argv=[
            sys.executable,
            "-m",
            "agents.llm.server",
            "--model",
            cfg.llm_model,
            "--port",
            str(cfg.ports.llm),
        ],
        cwd=REPO_ROOT,
        log_path=cfg.logs_dir / "llm.log",
        ready=lambda: http_ok(f"http://127.0.0.1:{cfg.ports.llm}/health"),
        ready_timeout_s=120,  # loading 1 GB of weights from a cold page cache
    )


def api_service(cfg: StackConfig) -> ManagedProcess:
    return ManagedProcess(
        name="api",
        argv=[
            sys.executable,
            "-m",
            "uvicorn",
            "api.main:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(cfg.ports.api),
            "--no-access-log",
            # The app decides which proxies to believe (FORWARDED_ALLOW_IPS, empty here).
            "--no-proxy-headers",
        ],
        env=cfg.service_env(),
        cwd=REPO_ROOT,
        log_path=cfg.logs_dir / "api.log",
        ready=lambda: http_ok(f"{cfg.api_url}/livez"),
    )


def agent_service(cfg: StackConfig, number: int = 1) -> ManagedProcess:
    """Agent worker `number`: the stack runs one; tests and `kaiwa up --workers` more."""
    process: ManagedProcess
    client = redis.Redis.from_url(cfg.redis_url, socket_timeout=1)

    def ready() -> bool:
        pid = process.proc.pid if process.proc else -1
        return any(w.get("pid") == pid for w in registered_workers(client))

    name = "agent" if number == 1 else f"agent-{number}"
    # The first worker's health and metrics endpoints have the stack's ports; the others'
    # health takes any free port, and they have no metrics endpoint.
    port = (
        {"AGENT_METRICS_PORT": str(cfg.ports.agent_metrics)}
        if number == 1
        else {"AGENT_HTTP_PORT": "0"}
    )
    # With several LiveKit nodes, worker n registers with node n (round the nodes).
    node = {"LIVEKIT_URL": cfg.livekit_node_urls[(number - 1) % cfg.livekit_nodes]}
    process = ManagedProcess(
        name=name,
        argv=[sys.executable, "-m", "agents"],
        env=cfg.service_env() | port | node,
        cwd=REPO_ROOT,
        log_path=cfg.logs_dir / f"{name}.log",
        ready=ready,
        # The first start of a worker imports livekit-agents and its plugins: slow on 2 cores.
        ready_timeout_s=120,
        # A worker drains its calls on SIGTERM (up to AGENT_DRAIN_TIMEOUT_S); locally,
        # stopping the stack ends the calls.
        stop_timeout_s=3,
    )
    return process


def watchdog_service(cfg: StackConfig) -> ManagedProcess:
    """Gives a call whose agent was lost a new one (agents/watchdog)."""
    return ManagedProcess(
        name="watchdog",
        argv=[sys.executable, "-m", "agents.watchdog"],
        env=cfg.service_env(),
        cwd=REPO_ROOT,
        log_path=cfg.logs_dir / "watchdog.log",
        ready=lambda: http_ok(f"http://127.0.0.1:{cfg.ports.watchdog}/metrics"),
        stop_timeout_s=5,
    )


def recorder_service(cfg: StackConfig) -> ManagedProcess:
    return ManagedProcess(
        name="recorder",
        argv=[sys.executable, "-m", "agents.recorder"],
        env=cfg.service_env(),
        cwd=REPO_ROOT,
        log_path=cfg.logs_dir / "recorder.log",
        ready=lambda: http_ok(f"{cfg.recorder_url}/healthz"),
        # It finishes its recordings on SIGTERM: closes the files, uploads and verifies them.
        stop_timeout_s=30,
    )


class Stack:
    """Starts the services in dependency order and stops them in reverse."""

    def __init__(self, cfg: StackConfig, *, with_agent: bool = True) -> None:
        self.cfg = cfg
        self.with_agent = with_agent
        self.services: dict[str, ManagedProcess] = {}

    def check_ports(self) -> None:
        p = self.cfg.ports
        check_port_free(p.redis, "redis")
        check_port_free(p.livekit, "livekit")
        check_port_free(p.livekit_rtc_tcp, "livekit_rtc_tcp")
        check_port_free(p.livekit_rtc_udp, "livekit_rtc_udp", udp=True)
        check_port_free(p.livekit_metrics, "livekit_metrics")
        if self.cfg.livekit_nodes > 1:
            check_port_free(p.livekit_2_metrics, "livekit_2_metrics")
            check_port_free(p.livekit_2, "livekit_2")
            check_port_free(p.livekit_2_rtc_tcp, "livekit_2_rtc_tcp")
            check_port_free(p.livekit_2_rtc_udp, "livekit_2_rtc_udp", udp=True)
        check_port_free(p.sip, "sip")
        check_port_free(p.sip, "sip", udp=True)
        check_port_free(p.sip_health, "sip_health")
        check_port_free(p.s3, "s3")
        check_port_free(p.llm, "llm")
        check_port_free(p.api, "api")
        check_port_free(p.recorder, "recorder")
        check_port_free(p.watchdog, "watchdog")
        if self.with_agent:
            check_port_free(p.agent_http, "agent_http")
            check_port_free(p.agent_metrics, "agent_metrics")

    def start(self, on_ready: Callable[[ManagedProcess], None] | None = None) -> None:
        self.check_ports()
        nodes = [partial(livekit_service, node=n) for n in range(2, self.cfg.livekit_nodes + 1)]
        builders: list[Callable[[StackConfig], ManagedProcess]] = [
            redis_service,
            livekit_service,
            *nodes,
            sip_service,
            s3_service,
            llm_service,
            api_service,
            recorder_service,
            watchdog_service,
        ]
        if self.with_agent:
            # One worker per node, each connected to its own node.
            builders += [
                partial(agent_service, number=n) for n in range(1, self.cfg.livekit_nodes + 1)
            ]
        for build in builders:
            service = build(self.cfg)
            self.services[service.name] = service
            service.start()
            service.wait_ready()
            if on_ready is not None:
                on_ready(service)

    def supervise(
        self,
        on_restart: Callable[[ManagedProcess, int], None],
        on_move: Callable[[ManagedProcess, str], None] = lambda _service, _url: None,
    ) -> None:
        """One round of supervision: a service that exited on its own, whatever its exit code,
        is started again, so one crashed process (the LLM server, say) does not take every
        call down. One that keeps crashing is a StackError. Then the SIP bridge is moved off
        a LiveKit node that is gone."""
        self._restart_crashed(on_restart)
        self._move_the_bridge_off_a_dead_node(on_move)

    def _restart_crashed(self, on_restart: Callable[[ManagedProcess, int], None]) -> None:
        for service in self.services.values():
            if not service.crashed():
                continue
            assert service.proc is not None
            now = time.monotonic()
            service.restarts = [t for t in service.restarts if now - t < RESTART_WINDOW_S]
            if len(service.restarts) >= MAX_RESTARTS:
                raise StackError(
                    f"{service.name} exited {MAX_RESTARTS + 1} times within "
                    f"{RESTART_WINDOW_S:.0f} s; see {service.log_path}:\n{service.log_tail()}"
                )
            service.restarts.append(now)
            on_restart(service, service.proc.returncode)
            self._point_at_a_live_node(service)
            service.start()
            service.wait_ready()

    def _point_at_a_live_node(self, service: ManagedProcess) -> None:
        """A worker reconnects only to its own LiveKit URL (16 tries, then it exits): one whose
        node is gone starts again on a node that answers."""
        url = service.env.get("LIVEKIT_URL")
        if not service.name.startswith("agent") or url is None or self._answers(url):
            return
        live = self._live_node()
        if live is not None:
            service.env["LIVEKIT_URL"] = live

    def _move_the_bridge_off_a_dead_node(
        self, on_move: Callable[[ManagedProcess, str], None]
    ) -> None:
        """The SIP bridge joins every call's room through the one node its `ws_url` names,
        and does not exit when that node dies: while it does not answer, new phone calls
        fail. So it is started again on a node that answers. (Its calls in progress were
        signalled through the dead node: they are lost either way.)"""
        bridge = self.services.get("sip")
        if bridge is None or not bridge.running() or self._answers(bridge.env["LIVEKIT_URL"]):
            return
        live = self._live_node()
        if live is None:
            return
        on_move(bridge, live)
        bridge.stop()
        moved = sip_service(self.cfg, ws_url=live)
        self.services["sip"] = moved
        moved.start()
        moved.wait_ready()

    def _live_node(self) -> str | None:
        return next((url for url in self.cfg.livekit_node_urls if self._answers(url)), None)

    @staticmethod
    def _answers(url: str) -> bool:
        try:
            return http_ok(url.replace("ws://", "http://") + "/")
        except OSError:
            return False

    def stop(self, on_stop: Callable[[ManagedProcess], None] | None = None) -> None:
        for service in reversed(list(self.services.values())):
            if on_stop is not None and service.running():
                on_stop(service)
            service.stop()
