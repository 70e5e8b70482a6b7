"""Agent worker settings, read from the same environment names as the API's."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.scenarios import DEFAULT_FILE as SCENARIOS_FILE


class AgentSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")

    livekit_url: str = "ws://127.0.0.1:7880"
    livekit_api_key: str = ""
    livekit_api_secret: str = ""
    redis_url: str = "redis://127.0.0.1:6379/0"
    agent_http_port: int = 8081
    # The worker's health endpoint listens on loopback unless a deployment says otherwise
    # (a Kubernetes probe reaches the pod's address: infra/k8s sets 0.0.0.0).
    agent_http_host: str = "127.0.0.1"
    # Load the offline engines when the worker starts (False for cloud-only workers).
    agent_prewarm: bool = True
    stt_model: str = "whisper-base"
    # Which engine serves each role: the offline one, or Google's (needs credentials).
    stt_engine: Literal["local", "google"] = "local"
    llm_engine: Literal["local", "google"] = "local"
    tts_engine: Literal["local", "google"] = "local"
    google_llm_model: str = "gemini-2.5-flash"
    llm_base_url: str = "http://127.0.0.1:8090/v1"
    llm_model: str = "qwen2.5-1.5b-instruct"
    # Where agents post transcripts and reports (the API's internal routes).
    api_internal_url: str = "http://127.0.0.1:8000"
    # Interpretation: a listener's translated audio never falls further behind than this.
    interpret_max_lag_s: float = 4.0
    # Calls one worker serves at once; beyond it LiveKit dispatches to another worker. A
    # dispatch no worker accepts is not retried (the caller gets no agent), and a room stays
    # 20 s after its last caller leaves, so this is a guard against overload, set generously.
    agent_max_sessions: int = Field(default=10, ge=1)
    # Dialog calls: Gemini Live when Google credentials are configured (auto), or always
    # the local pipeline, or always Gemini.
    dialog_engine: Literal["auto", "local", "gemini"] = "auto"
    gemini_live_model: str = "gemini-2.5-flash-native-audio-preview-12-2025"
    gemini_voice: str = "Puck"
    # Another Live API endpoint than Google's (a proxy or a stand-in), and its CA file.
    gemini_base_url: str = ""
    gemini_ca_file: str = ""
    # Dialog calls: the scenario catalogue, and when a call is ended for the caller.
    scenarios_file: Path = SCENARIOS_FILE
    dialog_idle_timeout_s: float = Field(default=1800.0, gt=0)
    dialog_max_call_s: float = Field(default=3600.0, gt=0)
    # How long a dialog waits for a caller whose page left (reload, lost network).
    dialog_rejoin_grace_s: float = Field(default=20.0, ge=0)
    # Idle processes kept warm for the next job; 1 is right for a 2-core machine.
    agent_idle_processes: int = 1
