"""Ogg/Opus files with PyAV, writing pages to any byte sink as they are made.

Two writers: `OggOpusEncoder` encodes PCM (libopus) for the room mix; `OggOpusPacketWriter`
stores Opus packets as they were received, for a track's own file, without re-encoding.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Protocol

import av
import numpy as np

from .mixer import SAMPLE_RATE, Samples

# Speech at 24 kb/s mono is transparent enough for review and 10.8 MB per hour. Complexity 5
# costs about 70% of the default's CPU for a quality loss we cannot hear on speech: it
# is what lets one core carry tens of recordings.
BIT_RATE = 24_000
COMPLEXITY = "5"


class ByteSink(Protocol):
    def write(self, data: bytes) -> int: ...


class _Writer:
    """The file-like object PyAV writes to: forwards to the sink, no seeking (Ogg needs none)."""

    def __init__(self, sink: ByteSink) -> None:
        self.sink = sink

    def write(self, data: bytes) -> int:
        return self.sink.write(bytes(data))


class OggOpusEncoder:
    """Encodes 48 kHz mono int16 ticks; every byte it makes goes to the sink at once.

    Not thread-safe: one thread (the recorder's encoding pool, never the event loop) calls it.
    The output is playable up to its last complete Ogg page even if `close` never runs.
    """

    def __init__(self, sink: ByteSink) -> None:
        self._container = av.open(_Writer(sink), mode="w", format="ogg")
        self._stream = self._container.add_stream(
            "libopus",
            rate=SAMPLE_RATE,
            layout="mono",
            options={"compression_level": COMPLEXITY, "application": "audio"},
        )
        self._stream.bit_rate = BIT_RATE
        self._pts = 0
        self.samples = 0

    def encode(self, samples: Samples) -> None:
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples).reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._pts
        self._pts += len(samples)
        self.samples += len(samples)
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def close(self) -> None:
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()

    @property
    def duration_s(self) -> float:
        return self.samples / SAMPLE_RATE


class OggOpusPacketWriter:
    """Stores Opus packets in Ogg as they came, each at its place on the track's timeline.

    Not thread-safe, like the encoder. Playable up to its last complete page if `close` never
    runs. The caller gives each packet's length in samples; silences in between are filled
    by the caller with packets the decoder conceals (see `track.plc_packet`).
    """

    def __init__(self, sink: ByteSink, channels: int) -> None:
        self._container = av.open(_Writer(sink), mode="w", format="ogg")
        # The stream's encoder is opened (PyAV opens every output stream) but never fed: it
        # only writes the Opus header, whose 312-sample pre-skip trims the first 6.5 ms.
        layout = "stereo" if channels == 2 else "mono"
        self._stream = self._container.add_stream("libopus", rate=SAMPLE_RATE, layout=layout)
        self._time_base = Fraction(1, SAMPLE_RATE)
        self.samples = 0

    def write(self, payload: bytes, samples: int) -> None:
        packet = av.Packet(payload)
        packet.pts = packet.dts = self.samples
        packet.duration = samples
        packet.time_base = self._time_base
        packet.stream = self._stream
        self._container.mux(packet)
        self.samples += samples

    def close(self) -> None:
        self._container.close()
