"""The agent worker's settings: the shared parts (core/settings.py) and its own."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from core.scenarios import DEFAULT_FILE as SCENARIOS_FILE
from core.settings import GoogleSettings, LiveKitSettings, RedisSettings

Engine = Literal["local", "google"]


class AgentSettings(LiveKitSettings, RedisSettings, GoogleSettings):
    # The worker's health endpoint listens on loopback unless a deployment says otherwise
    # (a Kubernetes probe reaches the pod's address: infra/k8s sets 0.0.0.0).
    agent_http_host: str = Field(
        default="127.0.0.1", description="Address of the worker's health endpoint."
    )
    agent_http_port: int = Field(default=8081, description="Port of the worker's health endpoint.")
    agent_metrics_port: int | None = Field(
        default=None,
        description="Port of the worker's Prometheus /metrics (on AGENT_HTTP_HOST); unset: "
        "none. livekit-agents serves it, with its own metrics next to Kaiwa's.",
    )
    agent_prewarm: bool = Field(
        default=True,
        description="Load the offline engines when the worker starts (false for cloud-only "
        "workers).",
    )
    # Idle processes kept warm for the next job; 1 is right for a 2-core machine.
    agent_idle_processes: int = Field(default=1, description="Job processes the worker keeps warm.")
    # Beyond it LiveKit dispatches to another worker. A dispatch no worker accepts is not
    # retried (the caller gets no agent), and a room stays 20 s after its last caller leaves,
    # so this is a guard against overload, set generously.
    agent_max_sessions: int = Field(
        default=10, ge=1, description="Calls one worker serves at once."
    )
    # On SIGTERM a worker takes no new call and waits for its calls to end, up to this; calls
    # still running then are cut and the watchdog moves them, with their context, to another
    # worker. Kubernetes' terminationGracePeriodSeconds must exceed it (infra/k8s).
    agent_drain_timeout_s: int = Field(
        default=600, ge=0, description="Seconds a stopping worker waits for its calls to end."
    )
    api_internal_url: str = Field(
        default="http://127.0.0.1:8000",
        description="Where agents post transcripts and reports (the API's internal routes).",
    )

    stt_engine: Engine = Field(default="local", description="Speech-to-text: local or google.")
    llm_engine: Engine = Field(default="local", description="Language model: local or google.")
    tts_engine: Engine = Field(default="local", description="Text-to-speech: local or google.")
    stt_model: str = Field(
        default="whisper-base", description="The catalogue speech-to-text model to load."
    )
    llm_base_url: str = Field(
        default="http://127.0.0.1:8090/v1",
        description="The OpenAI-compatible language model endpoint.",
    )
    llm_model: str = Field(
        default="qwen2.5-1.5b-instruct", description="The model name sent to LLM_BASE_URL."
    )
    google_llm_model: str = Field(
        default="gemini-2.5-flash", description="The Gemini model when LLM_ENGINE=google."
    )

    interpret_warm_languages: list[str] = Field(
        default=["en", "ja", "vi"],
        description="Interpretation: the worker has the language model read the prompts "
        "for translating between these languages when it starts, before it takes calls. "
        "A direction not read before is read when a call first needs it: several seconds "
        "on 2 cores, which the call's first sentence waits for.",
    )
    interpret_max_lag_s: float = Field(
        default=4.0,
        description="Interpretation: a listener's translated audio never falls further "
        "behind than this.",
    )

    dialog_engine: Literal["auto", "local", "gemini"] = Field(
        default="auto",
        description="Dialog calls: Gemini Live when Google credentials are configured (auto), "
        "or always the local pipeline, or always Gemini.",
    )
    gemini_live_model: str = Field(
        default="gemini-2.5-flash-native-audio-preview-12-2025",
        description="The Gemini Live model for dialog calls.",
    )
    gemini_voice: str = Field(default="Puck", description="The Gemini Live voice.")
    gemini_base_url: str = Field(
        default="", description="Another Live API endpoint than Google's (a proxy, a stand-in)."
    )
    gemini_ca_file: str = Field(default="", description="The CA that signs GEMINI_BASE_URL.")
    scenarios_file: Path = Field(
        default=SCENARIOS_FILE, description="The dialog scenario catalogue."
    )
    llm_reply_tokens: int = Field(
        default=256,
        ge=16,
        le=1024,
        description="The longest dialog reply (and call summary) the local LLM may write, in "
        "tokens: a small model can repeat itself without end, and a spoken reply should be "
        "short.",
    )
    llm_history_tokens: int = Field(
        default=1400,
        ge=200,
        description="The most of a dialog's conversation the LLM is given, in tokens "
        "(estimated); older turns are dropped, four exchanges at a time. Keep it under the "
        "server's context per slot (2048), with room for the reply.",
    )
    dialog_idle_timeout_s: float = Field(
        default=1800.0, gt=0, description="A dialog with nobody speaking this long is ended."
    )
    dialog_max_call_s: float = Field(
        default=3600.0, gt=0, description="A dialog call is ended after this long in all."
    )
    dialog_rejoin_grace_s: float = Field(
        default=20.0,
        ge=0,
        description="How long a dialog waits for a caller whose page left (reload, lost network).",
    )
