"""Puts every track's audio on one room clock: per-track jitter buffers, mixed per tick.

Audio from different tracks arrives in 10 ms frames with network and scheduling jitter. The
recorder's clock ticks every 20 ms of wall time and takes exactly one tick of samples from
each track, so the room mix is as long as the call, with every speaker in the right place,
whatever the arrivals did. Each track is primed with a little audio before it plays (the
jitter allowance); a late tick is filled with silence and counted as an underrun.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from .. import metrics

SAMPLE_RATE = 48_000
# Long ticks keep the per-room cost low: each tick is one wake-up of the event loop and one
# hand-off to the encoding pool, whatever its length. Latency does not matter to a recording.
# 200 ms (with 200 ms stream frames) took 14% less recorder CPU than 100 ms in `kaiwa bench
# recorder`; 500 ms saved little more and made the file ends coarser (docs/recording.md).
TICK_MS = 200
TICK_SAMPLES = SAMPLE_RATE * TICK_MS // 1000

# Each track plays this much behind its arrival: the allowance for jitter, above one stream
# frame (see room.STREAM_FRAME_MS). The room clock's timestamps are shifted back by it, so
# they say when the audio was heard, not written.
PRIME_MS = 400

Samples = npt.NDArray[np.int16]


@dataclass
class JitterBufferStats:
    """What a track's jitter buffer filled with silence or dropped on its way into the mix."""

    # Samples filled with silence because the track had not delivered them in time.
    underrun_samples: int = 0
    # Silences of over 100 ms filled in while the track was playing: audible gaps.
    gaps_over_100ms: int = 0
    dropped_samples: int = 0
    _missing: int = 0

    def tick(self, missing_samples: int) -> None:
        if missing_samples:
            self.underrun_samples += missing_samples
            self._missing += missing_samples
        else:
            if self._missing > SAMPLE_RATE // 10:
                self.gaps_over_100ms += 1
            self._missing = 0


@dataclass
class JitterBuffer:
    """One track's samples waiting for the clock.

    Bounded at `max_ms`: beyond it the oldest samples are dropped (a stalled clock must not
    grow memory, and fresh audio matters more than stale). A track that runs dry for
    `rearm_ms` goes back to priming, as a speaker who stopped sending has nothing to align.
    """

    prime_ms: int = PRIME_MS
    max_ms: int = 2000
    rearm_ms: int = 600  # three ticks: longer than the gap between two stream frames
    stats: JitterBufferStats = field(default_factory=JitterBufferStats)
    _chunks: list[Samples] = field(default_factory=list)
    _size: int = 0
    _playing: bool = False
    _dry_ticks: int = 0

    @property
    def buffered_samples(self) -> int:
        return self._size

    @property
    def playing(self) -> bool:
        return self._playing

    def push(self, samples: Samples) -> None:
        self._chunks.append(samples)
        self._size += len(samples)
        limit = SAMPLE_RATE * self.max_ms // 1000
        if self._size > limit:
            metrics.QUEUE_DROPPED.labels("recorder_mix").inc()
        while self._size > limit:
            excess = self._size - limit
            head = self._chunks[0]
            if len(head) <= excess:
                self._chunks.pop(0)
                self._size -= len(head)
                self.stats.dropped_samples += len(head)
            else:
                self._chunks[0] = head[excess:]
                self._size -= excess
                self.stats.dropped_samples += excess

    def pop_tick(self) -> Samples | None:
        """One tick of samples, or None while the track is priming (contributes nothing)."""
        if not self._playing:
            if self._size < SAMPLE_RATE * self.prime_ms // 1000:
                return None
            self._playing = True
            self._dry_ticks = 0
        out = np.zeros(TICK_SAMPLES, dtype=np.int16)
        filled = 0
        while filled < TICK_SAMPLES and self._chunks:
            head = self._chunks[0]
            take = min(len(head), TICK_SAMPLES - filled)
            out[filled : filled + take] = head[:take]
            filled += take
            if take == len(head):
                self._chunks.pop(0)
            else:
                self._chunks[0] = head[take:]
        self._size -= filled
        self.stats.tick(TICK_SAMPLES - filled)
        if filled == 0:
            self._dry_ticks += 1
            if self._dry_ticks * TICK_MS >= self.rearm_ms:
                self._playing = False
        else:
            self._dry_ticks = 0
        return out


def mix(parts: list[Samples]) -> Samples:
    """Sum with saturation: clipping is better than wrap-around when two people shout."""
    if not parts:
        return np.zeros(TICK_SAMPLES, dtype=np.int16)
    if len(parts) == 1:
        return parts[0]
    total = np.sum(np.stack(parts).astype(np.int32), axis=0)
    clipped: Samples = np.clip(total, -32768, 32767).astype(np.int16)
    return clipped
