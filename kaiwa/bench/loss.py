"""`kaiwa bench loss`: an interpreted call over a lossy network, against the same call without loss.

The callers sit in a network namespace of their own, joined to this host by a veth pair: the
only way between them and LiveKit. Inside the namespace, nftables drops a share of the packets
that cross the link, both ways, at random (`numgen random mod 100 < N drop`), signalling and
media alike, as a bad Wi-Fi or mobile link does. The stack runs on this host as `make up` runs
it, with LiveKit also listening on the link's host address.

Alice (en) and Kenji (ja) hold the café exchange of `kaiwa bench interpret` (kaiwa/bench/
interpret.py) once per loss level, each time in a fresh room. Measured per level:

- what was understood: WER of the English captions and CER of the Japanese ones, against the
  script;
- caption lag and translation lag at the listener, as `kaiwa bench interpret` measures them;
- completeness: turns that got a translated caption, sentences whose translated voice was
  heard, lines stored in the history;
- the recording: speech found in each caller's own file ÷ the speech that caller sent (10 ms
  frames over the same loudness), the audio the recorder itself counted as lost, and the room
  mix's length ÷ the call's;
- the loss really applied: packets dropped ÷ packets seen, from the rules' own counters.

The callers run in a child process started inside the namespace (`python -m
kaiwa.bench.loss`); it reads its grants as JSON on stdin and prints its figures as JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import jiwer
import numpy as np

from core.protocol import DROPPED_SENTENCES_ATTRIBUTE, FINAL
from kaiwa.audio_files import RATE, decode_ogg
from kaiwa.caller import SyntheticCaller
from kaiwa.eval.text import normalize
from kaiwa.stack.config import StackConfig
from kaiwa.stack.services import Stack, ephemeral_config

from .common import bench_grant, create_room, stored_lines
from .interpret import SCRIPT, captions_of, converse, figures_of, voice_onsets
from .recorder import FRAME_S, recording_manifests, stored_object, voiced_frames

LOSSES = (0, 5, 10)
TABLE = "kaiwa_loss"


@dataclass(frozen=True)
class LossyLink:
    """A network namespace and the veth pair that is its only way out."""

    namespace: str
    host_device: str
    host_ip: str
    caller_ip: str

    def ip(self, *argv: str) -> None:
        subprocess.run(["ip", *argv], check=True, capture_output=True, text=True)

    def inside(self, *argv: str, stdin: str | None = None) -> str:
        done = subprocess.run(
            ["ip", "netns", "exec", self.namespace, *argv],
            input=stdin,
            check=True,
            capture_output=True,
            text=True,
        )
        return done.stdout

    def set_loss(self, percent: int) -> None:
        """Drop `percent` % of the packets crossing the link, each way, from now on; the rules'
        counters start again from zero."""
        device = "veth0"
        rules = f"""
table inet {TABLE}
delete table inet {TABLE}
table inet {TABLE} {{
    chain inbound {{
        type filter hook input priority 0; policy accept;
        iifname "{device}" counter
        iifname "{device}" numgen random mod 100 < {percent} counter drop
    }}
    chain outbound {{
        type filter hook output priority 0; policy accept;
        oifname "{device}" counter
        oifname "{device}" numgen random mod 100 < {percent} counter drop
    }}
}}
"""
        self.inside("nft", "-f", "-", stdin=rules)

    def dropped_share(self) -> dict[str, float]:
        """Packets dropped ÷ packets seen, each way, by the rules' counters."""
        listing = json.loads(self.inside("nft", "-j", "list", "table", "inet", TABLE))
        counts: dict[str, list[int]] = {}
        for item in listing["nftables"]:
            rule = item.get("rule")
            if rule is None:
                continue
            for expression in rule["expr"]:
                if "counter" in expression:
                    counts.setdefault(rule["chain"], []).append(expression["counter"]["packets"])
        return {
            chain: round(dropped / seen, 4) if seen else 0.0
            for chain, (seen, dropped) in counts.items()
        }


@contextmanager
def lossy_link() -> Iterator[LossyLink]:
    """A fresh namespace behind a veth pair, removed afterwards (which removes the pair)."""
    tag = f"{os.getpid() % 100000}{uuid.uuid4().hex[:3]}"
    # A /30 of its own per run, from the pid, so two runs on one host do not collide.
    subnet = f"10.{200 + os.getpid() % 50}.{uuid.uuid4().int % 250}"
    link = LossyLink(f"kaiwa-loss-{tag}", f"kl{tag}", f"{subnet}.1", f"{subnet}.2")
    link.ip("netns", "add", link.namespace)
    try:
        link.ip("link", "add", link.host_device, "type", "veth", "peer", "name", "veth0",
                "netns", link.namespace)  # fmt: skip
        link.ip("addr", "add", f"{link.host_ip}/30", "dev", link.host_device)
        link.ip("link", "set", link.host_device, "up")
        link.inside("ip", "addr", "add", f"{link.caller_ip}/30", "dev", "veth0")
        link.inside("ip", "link", "set", "veth0", "up")
        link.inside("ip", "link", "set", "lo", "up")
        # As on any phone or laptop, the way out is the default route.
        link.inside("ip", "route", "add", "default", "via", link.host_ip)
        yield link
    finally:
        subprocess.run(["ip", "netns", "delete", link.namespace], check=False)


# --- the callers, inside the namespace -------------------------------------------------------


async def _hold_call(request: dict[str, Any]) -> dict[str, Any]:
    script = [(language, sentences) for language, sentences in request["script"]]
    alice = SyntheticCaller("", name="Alice", mode="interpret", language="en")
    kenji = SyntheticCaller("", name="Kenji", mode="interpret", language="ja")
    joined: dict[str, float] = {}
    left: dict[str, float] = {}
    try:
        for caller in (alice, kenji):
            await caller.connect(request["grants"][caller.language])
            joined[caller.language] = time.time()
        agent = await alice.wait_for_agent(timeout_s=60)
        await asyncio.sleep(2)
        turns = await converse(alice, kenji, script)
        dropped = int(agent.attributes.get(DROPPED_SENTENCES_ATTRIBUTE, "0"))
        room_sid = await alice.room.sid
    finally:
        for caller in (kenji, alice):
            await caller.leave()
            left[caller.language] = time.time()
    heard: dict[str, list[tuple[str, str]]] = {"en": [], "ja": []}
    # Measured on the audio sent, not synthesized again: a neural voice says a sentence a
    # little differently each time.
    spoken = {"en": 0.0, "ja": 0.0}
    translated_turns = voiced_turns = 0
    for turn in turns:
        if turn.speech is not None:
            spoken[turn.speaker.language] += _voiced_seconds(turn.speech, turn.rate)
        said = " ".join(turn.sentences)
        captions = [
            c.text for c in captions_of(turn, translated=False) if c.attributes.get(FINAL) == "true"
        ]
        heard[turn.speaker.language].append((said, " ".join(captions)))
        translated = captions_of(turn, translated=True)
        translated_turns += any(c.attributes.get(FINAL) == "true" for c in translated)
        voiced_turns += bool(voice_onsets(turn))
    return {
        "figures": figures_of(turns),
        "heard": heard,
        "spoken_s": spoken,
        "turns": len(turns),
        "translated_turns": translated_turns,
        "voiced_turns": voiced_turns,
        "dropped_sentences": dropped,
        "room_sid": room_sid,
        "identities": {c.language: c.identity for c in (alice, kenji)},
        "in_call_s": {language: left[language] - joined[language] for language in joined},
        "call_s": max(left.values()) - min(joined.values()),
    }


def _callers_main() -> None:
    import logging

    if os.environ.get("KAIWA_LOSS_DEBUG"):
        logging.basicConfig(level=logging.DEBUG)
    request = json.loads(sys.stdin.read())
    print(json.dumps(asyncio.run(_hold_call(request))), flush=True)  # noqa: T201


# --- the bench, on the host ------------------------------------------------------------------


def _voiced_seconds(pcm: np.ndarray[Any, Any], rate: int) -> float:
    """Speech in audio sent at `rate`, by the measure applied to its recording."""
    voiced = voiced_frames(pcm.astype(np.float32) / np.float32(32768))
    # The measure cuts frames of a recording's length (10 ms at 48 kHz); at the voice's own
    # rate each lasts longer or shorter.
    return float(np.sum(voiced)) * FRAME_S * RATE / rate


def _error(pairs: list[list[str]], language: str) -> float | None:
    """Over the turns' [said, captioned] pairs: WER, or CER for Japanese."""
    if not pairs:
        return None
    refs = [normalize(said, language) for said, _ in pairs]
    hyps = [normalize(heard, language) for _, heard in pairs]
    error = jiwer.cer(refs, hyps) if language == "ja" else jiwer.wer(refs, hyps)
    return round(float(error), 4)


async def _recording(
    cfg: StackConfig, call: dict[str, Any], spoken: dict[str, float]
) -> dict[str, Any]:
    """The call's recordings once stored: each caller's speech kept, the audio the recorder
    counted as lost, and the mix's length against the call's."""
    identities = {identity: language for language, identity in call["identities"].items()}
    deadline = time.monotonic() + 60
    files: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        manifests = await asyncio.to_thread(recording_manifests, cfg, call["room_sid"])
        files = [
            m
            for m in manifests
            if "roomComposite" in m
            or json.loads(m.get("details") or "{}").get("participant_identity") in identities
        ]
        if len(files) >= 1 + len(identities):
            break
        await asyncio.sleep(1)
    kept: dict[str, float] = {}
    lost_ms = 0
    mix_ratio = None
    for manifest in files:
        audio = decode_ogg(
            await asyncio.to_thread(stored_object, cfg, manifest["fileResults"][0]["filename"])
        )
        if "roomComposite" in manifest:
            mix_ratio = round(len(audio) / RATE / call["call_s"], 4)
            continue
        details = json.loads(manifest.get("details") or "{}")
        language = identities[details["participant_identity"]]
        voiced = float(np.sum(voiced_frames(audio))) * FRAME_S
        kept[language] = round(voiced / spoken[language], 4)
        lost_ms += int(details.get("lost_ms", 0))
    return {
        "recordings_stored": len(files),
        "speech_kept": kept,
        "recorder_lost_ms": lost_ms,
        "mix_duration_ratio": mix_ratio,
    }


async def call_over(
    cfg: StackConfig, link: LossyLink, loss: int, script: list[tuple[str, list[str]]]
) -> dict[str, Any]:
    """One interpreted call with `loss` % of the link's packets dropped each way."""
    room = f"loss-{loss}-{uuid.uuid4().hex[:6]}"
    await create_room(cfg, room, {"mode": "interpret"})
    url = f"ws://{link.host_ip}:{cfg.ports.livekit}"
    grants = {
        language: {
            **bench_grant(
                cfg, room, f"{name}-{uuid.uuid4().hex[:4]}", mode="interpret", language=language
            ),
            "url": url,
        }
        for language, name in (("en", "alice"), ("ja", "kenji"))
    }
    link.set_loss(loss)
    child = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", link.namespace, sys.executable, "-m", "kaiwa.bench.loss",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await child.communicate(json.dumps({"grants": grants, "script": script}).encode())
    dropped_share = await asyncio.to_thread(link.dropped_share)
    if child.returncode != 0:
        raise RuntimeError(f"the callers' process failed ({child.returncode}) at {loss}% loss")
    call: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    spoken = call["spoken_s"]
    sentences = call["figures"]["sentences"]
    lines = await stored_lines(cfg, room, done=lambda lines: len(lines) >= call["turns"])
    figures = call["figures"]
    return {
        "loss_percent": loss,
        "dropped_share": dropped_share,
        "wer_en": _error(call["heard"]["en"], "en"),
        "cer_ja": _error(call["heard"]["ja"], "ja"),
        "caption_lag_s_median": figures["caption_lag_s_median"],
        "caption_lag_s_p95": figures["caption_lag_s_p95"],
        "translation_lag_s_median": figures["translation_lag_s_median"],
        "translation_lag_s_p95": figures["translation_lag_s_p95"],
        "turns": call["turns"],
        "turns_with_translated_caption": call["translated_turns"],
        "turns_with_translated_voice": call["voiced_turns"],
        "sentences": sentences,
        "sentences_with_translated_voice": figures["sentences_voiced"],
        "dropped_sentences": call["dropped_sentences"],
        "lines_stored": len(lines),
        "lines_translated": sum(1 for line in lines if line.get("translations")),
        "recording": await _recording(cfg, call, spoken),
        "call_s": round(call["call_s"], 1),
    }


def link_config(state_dir: Path, link: LossyLink) -> StackConfig:
    return replace(ephemeral_config(state_dir), livekit_link_ip=link.host_ip)


async def run(losses: tuple[int, ...] = LOSSES) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="kaiwa-loss-") as state_dir, lossy_link() as link:
        cfg = link_config(Path(state_dir), link)
        stack = Stack(cfg)
        try:
            await asyncio.to_thread(stack.start)
            levels = [await call_over(cfg, link, loss, SCRIPT) for loss in losses]
        finally:
            await asyncio.to_thread(stack.stop)
    return {"levels": levels, "machine_cpus": os.cpu_count()}


if __name__ == "__main__":
    _callers_main()
