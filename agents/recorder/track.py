"""One received audio track: its Opus packets in order, into its own file and into the mix.

The packets are stored as they came (a track's file is never re-encoded), placed by their RTP
timestamps: a silence the sender skipped (DTX) or a packet lost on the way is filled with
packets the decoder conceals, so the file keeps the sender's timeline. The mix needs PCM, so
the same packets are decoded too; only real packets are, as the mix's clock fills its own
silences (see `mixer`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import av
import numpy as np

from .. import metrics
from .metrics import GAPS, LOST_PACKETS
from .mixer import SAMPLE_RATE, JitterBuffer, Samples
from .subscriber import OpusPacket

if TYPE_CHECKING:
    from .recording import Recording

# Packets waiting for the clock, per track: 5 s of 20 ms packets. Beyond it (a stalled clock)
# the oldest are dropped and counted, as memory must stay bounded.
MAX_PENDING = 250
FRAME_20MS = SAMPLE_RATE // 50
# A silence longer than this is not filled in the file (a track muted for an hour): its file
# jumps over it, and the gap is reported.
MAX_FILL_SAMPLES = SAMPLE_RATE * 600

# Opus packets this small hold no audio to mix: DTX and comfort-noise updates (RFC 6716 2.1.9).
DTX_MAX_BYTES = 2
# Frame lengths in 2.5 ms units by the TOC's configuration (RFC 6716 3.1): SILK 10, 20, 40,
# 60 ms; hybrid 10, 20 ms; CELT 2.5, 5, 10, 20 ms.
_FRAME_UNITS = [4, 8, 16, 24] * 3 + [4, 8] * 2 + [1, 2, 4, 8] * 4


def opus_samples(payload: bytes) -> int:
    """A packet's length in 48 kHz samples, from its TOC byte (RFC 6716 3.1)."""
    toc = payload[0]
    frame = _FRAME_UNITS[toc >> 3] * SAMPLE_RATE // 400
    code = toc & 0x3
    if code == 0:
        frames = 1
    elif code in (1, 2):
        frames = 2
    else:
        frames = payload[1] & 0x3F if len(payload) > 1 else 1
    return frame * frames


def plc_packet(toc: int) -> bytes:
    """20 ms the decoder conceals: one empty frame (RFC 6716 3.2.1), CELT fullband 20 ms
    (configuration 31), with the stereo flag of the stream's own packets."""
    return bytes([0xF8 | (toc & 0x4)])


def _unwrap(value: int, last: int, bits: int) -> int:
    """The extended form of a wrapping counter, the one nearest the last seen."""
    span = 1 << bits
    delta = (value - last) % span
    if delta >= span // 2:
        delta -= span
    return last + delta


@dataclass
class PacketStats:
    """What became of a track's packets on their way into its file."""

    lost_samples: int = 0  # packets that never came (sequence numbers skipped)
    gaps_over_100ms: int = 0  # losses of over 100 ms in a row: audible gaps
    late_packets: int = 0  # came after later ones were stored, or twice: not stored
    dropped_packets: int = 0  # the recorder fell behind and dropped them


@dataclass
class Timeline:
    """Orders a track's packets and says, for each, the silence to fill before it."""

    stats: PacketStats = field(default_factory=PacketStats)
    _sequence: int | None = None  # extended sequence number of the last accepted packet
    _end: int = 0  # extended RTP timestamp where the last accepted packet ends

    def accept(self, packets: list[OpusPacket]) -> list[tuple[OpusPacket, int, int]]:
        """(packet, its length in samples, samples of silence before it) in playing order."""
        if not packets:
            return []
        reference = packets[0].sequence if self._sequence is None else self._sequence
        keyed = sorted(
            ((_unwrap(p.sequence, reference, 16), p) for p in packets), key=lambda item: item[0]
        )
        if self._sequence is None:
            # The track starts at its earliest packet, whichever came first.
            self._sequence = keyed[0][0] - 1
            self._end = keyed[0][1].timestamp
        out: list[tuple[OpusPacket, int, int]] = []
        for extended, packet in keyed:
            if extended <= self._sequence:
                self.stats.late_packets += 1
                continue
            timestamp = _unwrap(packet.timestamp, self._end, 32)
            silence = max(0, timestamp - self._end)
            skipped = extended - self._sequence - 1
            if skipped:
                # What was lost is at most the packets that never came: a loss beside a
                # silence the sender skipped (DTX) loses a packet's audio, not the silence.
                lost = min(silence, skipped * FRAME_20MS)
                self.stats.lost_samples += lost
                LOST_PACKETS.inc(skipped)
                if lost > SAMPLE_RATE // 10:
                    self.stats.gaps_over_100ms += 1
                    GAPS.inc()
            length = opus_samples(packet.payload)
            out.append((packet, length, silence))
            self._sequence = extended
            self._end = max(self._end, timestamp) + length
        return out


@dataclass(eq=False)  # compared (and weakly referenced) as itself
class Track:
    """An audio track in the room. Its packets are appended on the event loop and processed,
    one clock tick's worth at a time, in the recorder's pool (`ingest`)."""

    sid: str
    participant_sid: str
    identity: str
    name: str
    buffer: JitterBuffer = field(default_factory=JitterBuffer)
    timeline: Timeline = field(default_factory=Timeline)
    pending: list[OpusPacket] = field(default_factory=list)
    recording: Recording | None = None
    ended: bool = False
    _decoder: av.AudioCodecContext | None = None

    def __post_init__(self) -> None:
        metrics.QUEUE_DEPTHS.track("recorder_packets", self, lambda track: len(track.pending))

    def receive(self, packet: OpusPacket) -> None:
        """On the event loop, for every packet: keep it cheap."""
        self.pending.append(packet)
        if len(self.pending) > MAX_PENDING:
            del self.pending[0]
            self.timeline.stats.dropped_packets += 1
            metrics.QUEUE_DROPPED.labels("recorder_packets").inc()

    def take_pending(self) -> list[OpusPacket]:
        packets, self.pending = self.pending, []
        return packets

    @property
    def drained(self) -> bool:
        return not self.pending and self.buffer.buffered_samples == 0

    def ingest(self, packets: list[OpusPacket]) -> Samples | None:
        """In the pool: store the packets in the track's file and decode them for the mix."""
        ordered = self.timeline.accept(packets)
        if not ordered:
            return None
        if self.recording is not None:
            writer = self.recording.packet_writer(
                channels=2 if ordered[0][0].payload[0] & 0x4 else 1
            )
            for packet, length, silence in ordered:
                if 0 < silence <= MAX_FILL_SAMPLES:
                    filler = plc_packet(packet.payload[0])
                    for _ in range(silence // FRAME_20MS):
                        writer.write(filler, FRAME_20MS)
                writer.write(packet.payload, length)
        if self._decoder is None:
            self._decoder = av.CodecContext.create("libopus", "r")
            assert self._decoder is not None
            self._decoder.sample_rate = SAMPLE_RATE
            self._decoder.layout = "mono"
        pcm: list[Samples] = []
        for packet, _length, _silence in ordered:
            if len(packet.payload) <= DTX_MAX_BYTES:
                # Silence the sender skipped (DTX): one tiny packet every 400 ms. Decoded,
                # each would trickle 20 ms of stale comfort noise into the mix's buffer;
                # left out, the buffer runs dry and primes again when speech returns.
                continue
            try:
                frames = self._decoder.decode(av.Packet(packet.payload))
            except av.error.InvalidDataError:
                continue  # a corrupt packet is silence in the mix; the file keeps it as sent
            for frame in frames:
                pcm.append(frame.to_ndarray().reshape(-1).astype(np.int16, copy=False))
        return np.concatenate(pcm) if pcm else None
