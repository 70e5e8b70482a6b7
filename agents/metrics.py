"""What an agent worker measures, for Prometheus (served on AGENT_METRICS_PORT).

Names follow Prometheus' conventions: a `kaiwa_` prefix, base units, `_total` counters (the
client adds the suffix), histograms for latencies. Labels are low-cardinality only (mode,
stage, language, queue, result): never a room, an identity, a phone number or words.

A call's latency is split into stages, each measured inside the pipeline from the mark
before it. The same names (core/payloads.py: LatencyStage) label the histograms and each
stored turn's or segment's ledger (its `timings`), so a slow line in a transcript and a slow
stage on a dashboard read alike:

- `final_transcript`: end of speech, to the final transcript;
- `end_of_turn`: final transcript, to the decision that the caller's turn is over (dialog);
- `translation`: final transcript, to its translation (per target language);
- `first_frame`: translation, to its first synthesized frame published (per language);
- `llm_first_token`: end of the caller's turn, to the LLM's first token (dialog);
- `reply_first_frame`: the LLM's first token, to the reply's first frame published (dialog);
- `barge_in`: the caller starting to talk over the agent, to its audio stopping (dialog).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any, Literal

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from core.payloads import LatencyStage

Mode = Literal["dialog", "interpret"]
Stage = LatencyStage

# From what a model answers at best on a GPU to past where a caller has given up.
STAGE_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 13.0)

STAGE_SECONDS = Histogram(
    "kaiwa_stage_seconds",
    "Latency of one stage of a call's pipeline, measured inside it (agents/metrics.py)",
    ["mode", "stage", "language"],
    buckets=STAGE_BUCKETS,
)
QUEUE_DROPPED = Counter(
    "kaiwa_queue_dropped",
    "Items a bounded queue gave up (its oldest, or one too late to use), by queue",
    ["queue"],
)
HISTORY_SEGMENTS = Counter(
    "kaiwa_history_segments",
    "Segments and turns this worker sent the history API, by result: stored, duplicate "
    "(stored before: a retry), refused (invalid, here or by the API), retried (in a batch "
    "that failed and was posted again), lost (the buffer overflowed while the API was away)",
    ["result"],
)
CHAT_MESSAGES = Counter(
    "kaiwa_chat_messages",
    "Typed messages (agents/chat.py), by result: taken, or why refused (empty, too_long, "
    "control_characters, too_fast, duplicate: a retried send already taken, id_taken: "
    "another sender's message id, incomplete: a stream still open past the read timeout)",
    ["result"],
)
LLM_ERRORS = Counter(
    "kaiwa_llm_errors",
    "Language model requests that failed (a dialog reply, a translation), by mode and reason: "
    "timeout (no answer in time: the server is behind), refused (it answered with an error "
    "status), unreachable (no connection), other",
    ["mode", "reason"],
)
TRANSLATIONS = Counter(
    "kaiwa_translations",
    "Translations by the language model, by result: passed (its checks, agents/"
    "translation_check.py), retried (failed them, passed on the stricter retry), unavailable "
    "(failed both: the caption says so and nothing is spoken)",
    ["result"],
)
TRANSLATION_PROBLEMS = Counter(
    "kaiwa_translation_problems",
    "Model outputs that failed a translation check, by problem: empty, unchanged, "
    "wrong_script, refusal, length",
    ["problem"],
)
OTHER_LANGUAGE_SPEECH = Counter(
    "kaiwa_other_language_speech",
    "Interpreted sentences heard in another language than their speaker set: captioned as "
    "heard and not translated, by the language set and the language heard",
    ["setting", "heard"],
)
GEMINI_FALLBACKS = Counter(
    "kaiwa_gemini_fallbacks",
    "Dialog calls whose Gemini Live session failed and went on with the local pipeline",
)


LlmErrorReason = Literal["timeout", "refused", "unreachable", "other"]


def llm_error_reason(error: object) -> LlmErrorReason:
    """Why a language model request failed, from the error of either client in use (the
    dialog's livekit-agents plugin, the translator's openai client). A server that is
    behind times out; one that refuses a request (a prompt too long for its context)
    answers with a status: the two call for different mends, so they are counted apart."""
    # The error and what it wraps: livekit-agents puts the plugin's error in an event
    # (LLMError.error), and both libraries chain causes ("failed after 4 attempts", caused
    # by a timeout). Bounded against a cycle.
    chain: list[set[str]] = []
    cause: object = error
    while cause is not None and len(chain) < 8:
        names = {kind.__name__ for kind in type(cause).__mro__}
        if isinstance(cause, TimeoutError):
            names.add("APITimeoutError")
        chain.append(names)
        inner = getattr(cause, "error", None)
        cause = inner if inner is not None else getattr(cause, "__cause__", None)
    # A timeout is also a connection error in both libraries: the most telling name wins.
    telling: tuple[tuple[str, LlmErrorReason], ...] = (
        ("APITimeoutError", "timeout"),
        ("APIStatusError", "refused"),
        ("APIConnectionError", "unreachable"),
    )
    for name, reason in telling:
        if any(name in names for names in chain):
            return reason
    return "other"


def observe_stage(mode: Mode, stage: Stage, language: str, seconds: float) -> float:
    """Count one stage's latency; returns it rounded to the millisecond, for a ledger."""
    seconds = max(0.0, seconds)
    STAGE_SECONDS.labels(mode, stage, language.split("-")[0]).observe(seconds)
    return round(seconds, 3)


class QueueDepths(Collector):
    """`kaiwa_queue_depth{queue}`: the items waiting in every bounded queue, summed over the
    live instances of each, read at scrape time (nothing to keep in step as items come and
    go). Owners are held weakly: a call's queues leave the sum when the call is gone. Calls
    run on threads of their own, and scrapes on the metrics server's: hence the lock."""

    def __init__(self) -> None:
        self._queues: dict[str, weakref.WeakKeyDictionary[Any, Callable[[Any], int]]] = {}
        self._lock = threading.Lock()

    def track(self, name: str, owner: Any, depth: Callable[[Any], int]) -> None:
        """Count `depth(owner)` under `name` while `owner` lives. `depth` must not hold a
        reference to the owner (pass an unbound function of it)."""
        with self._lock:
            self._queues.setdefault(name, weakref.WeakKeyDictionary())[owner] = depth

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "kaiwa_queue_depth", "Items waiting in a bounded queue, by queue", labels=["queue"]
        )
        with self._lock:
            queues = {name: list(owners.items()) for name, owners in self._queues.items()}
        for name, owned in sorted(queues.items()):
            family.add_metric([name], sum(depth(owner) for owner, depth in owned))
        yield family


QUEUE_DEPTHS = QueueDepths()
REGISTRY.register(QUEUE_DEPTHS)
