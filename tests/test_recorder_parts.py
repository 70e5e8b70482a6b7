"""The recorder's parts on their own: room clock buffers, Ogg/Opus files, received packets
in order, the retries of a spooled upload. (Uploads to a real S3 server:
`test_recorder_storage.py`.)"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from livekit.protocol import egress as lkegress

from agents.recorder.egress import EgressRecord
from agents.recorder.encoder import OggOpusEncoder, OggOpusPacketWriter
from agents.recorder.mixer import SAMPLE_RATE, TICK_MS, TICK_SAMPLES, JitterBuffer, mix
from agents.recorder.service import ogg_duration_ns
from agents.recorder.subscriber import OpusPacket, opus_payload_types, ssrc_tracks
from agents.recorder.track import FRAME_20MS, Timeline, Track, opus_samples, plc_packet
from agents.recorder.upload import (
    SpooledObject,
    Uploader,
    VerificationError,
    finish_upload,
    store_manifest,
)
from kaiwa.audio_files import decode_ogg

from .support.recordings import rms

pytestmark = pytest.mark.unit


def samples(n: int, value: int = 1000) -> np.ndarray[Any, np.dtype[np.int16]]:
    return np.full(n, value, dtype=np.int16)


def test_track_is_silent_until_primed_then_plays_in_order() -> None:
    buffer = JitterBuffer(prime_ms=2 * TICK_MS)
    buffer.push(samples(TICK_SAMPLES, 1))  # one tick: not primed yet
    assert buffer.pop_tick() is None
    buffer.push(samples(TICK_SAMPLES, 2))
    first = buffer.pop_tick()
    second = buffer.pop_tick()
    assert first is not None and second is not None
    assert set(first.tolist()) == {1} and set(second.tolist()) == {2}
    assert buffer.stats.underrun_samples == 0


def test_a_late_track_is_filled_with_silence_and_counted() -> None:
    buffer = JitterBuffer(prime_ms=TICK_MS, rearm_ms=10_000)
    buffer.push(samples(TICK_SAMPLES + TICK_SAMPLES // 2))
    assert buffer.pop_tick() is not None
    half = buffer.pop_tick()
    assert half is not None and np.count_nonzero(half) == TICK_SAMPLES // 2
    for _ in range(3):  # three ticks with nothing: one gap over 100 ms
        buffer.pop_tick()
    buffer.push(samples(TICK_SAMPLES))
    buffer.pop_tick()
    assert buffer.stats.underrun_samples == TICK_SAMPLES // 2 + 3 * TICK_SAMPLES
    assert buffer.stats.gaps_over_100ms == 1


def test_buffer_is_bounded_and_drops_the_oldest() -> None:
    buffer = JitterBuffer(prime_ms=TICK_MS, max_ms=5 * TICK_MS)
    for value in range(1, 11):  # ten ticks of audio into a bound of five
        buffer.push(samples(TICK_SAMPLES, value))
    assert buffer.buffered_samples == 5 * TICK_SAMPLES
    assert buffer.stats.dropped_samples == 5 * TICK_SAMPLES
    tick = buffer.pop_tick()
    assert tick is not None and set(tick.tolist()) == {6}


def test_mix_saturates_instead_of_wrapping() -> None:
    loud = samples(TICK_SAMPLES, 30_000)
    assert set(mix([loud, loud]).tolist()) == {32767}
    assert set(mix([samples(TICK_SAMPLES, 5), samples(TICK_SAMPLES, -2)]).tolist()) == {3}


class Collect:
    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> int:
        self.data += data
        return len(data)


def test_ogg_opus_file_has_the_ticks_length_and_survives_truncation(tmp_path: Path) -> None:
    sink = Collect()
    encoder = OggOpusEncoder(sink)
    t = np.arange(TICK_SAMPLES) / SAMPLE_RATE
    tone = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
    for _ in range(5000 // TICK_MS):  # 5 s
        encoder.encode(tone)
    encoder.close()
    audio = decode_ogg(bytes(sink.data))
    assert abs(len(audio) / SAMPLE_RATE - 5.0) < 0.03
    # A recorder killed mid-file leaves a prefix: it still plays, up to its last page.
    cut = tmp_path / "cut.ogg"
    cut.write_bytes(bytes(sink.data[: len(sink.data) // 2]))
    assert 1.0 < ogg_duration_ns(cut) / 1e9 < 4.0
    # Killed before its first audio page (a quiet track): headers only, or less.
    for size in (100, 0):
        cut.write_bytes(bytes(sink.data[:size]))
        assert ogg_duration_ns(cut) == 0


def opus_packets(seconds: float) -> list[bytes]:
    """A 440 Hz tone as WebRTC sends it: 20 ms Opus packets."""
    encoder = av.CodecContext.create("libopus", "w")
    encoder.sample_rate = SAMPLE_RATE
    encoder.layout = "mono"
    encoder.format = "s16"
    out: list[bytes] = []
    for i in range(int(seconds * 50)):
        t = (np.arange(FRAME_20MS) + i * FRAME_20MS) / SAMPLE_RATE
        frame = av.AudioFrame.from_ndarray(
            (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16).reshape(1, -1),
            format="s16",
            layout="mono",
        )
        frame.sample_rate = SAMPLE_RATE
        frame.pts = i * FRAME_20MS
        out.extend(bytes(p) for p in encoder.encode(frame))
    return out


def rtp(
    payloads: list[bytes], first_sequence: int = 0, first_timestamp: int = 0
) -> list[OpusPacket]:
    return [
        OpusPacket(
            sequence=(first_sequence + i) % 65536,
            timestamp=(first_timestamp + i * FRAME_20MS) % 2**32,
            payload=p,
            arrived_ns=i * 20_000_000,
        )
        for i, p in enumerate(payloads)
    ]


def test_opus_packet_lengths_come_from_the_toc() -> None:
    assert opus_samples(bytes([0xF8])) == FRAME_20MS  # CELT FB 20 ms, one frame
    assert opus_samples(bytes([0x08 | 0x1, 0, 0])) == 2 * FRAME_20MS  # SILK 20 ms, two frames
    assert opus_samples(bytes([0xE3, 0x03])) == 3 * 120  # CELT FB 2.5 ms, code 3: three
    assert plc_packet(0x7C | 0x4) == bytes([0xFC])  # 20 ms, stereo kept, one empty frame


def test_timeline_orders_packets_drops_repeats_and_counts_losses() -> None:
    packets = rtp([bytes([0xF8, i]) for i in range(10)], first_sequence=65530)
    timeline = Timeline()
    # Out of order within a tick, across the sequence number's wrap.
    first = timeline.accept([packets[1], packets[0], packets[2]])
    assert [p.payload[1] for p, _, _ in first] == [0, 1, 2]
    assert all(silence == 0 for _, _, silence in first)
    # A repeat and a packet older than what was stored are not stored again.
    again = timeline.accept([packets[2], packets[1], packets[3]])
    assert [p.payload[1] for p, _, _ in again] == [3]
    assert timeline.stats.late_packets == 2
    # Packets 4..8 lost (100 ms): the next one comes after 100 ms of silence to fill.
    (after_loss,) = timeline.accept([packets[9]])
    assert after_loss[2] == 5 * FRAME_20MS
    assert timeline.stats.lost_samples == 5 * FRAME_20MS
    assert timeline.stats.gaps_over_100ms == 0  # 100 ms exactly is not over


def test_a_silence_the_sender_skipped_is_filled_but_not_counted_lost() -> None:
    # DTX: consecutive sequence numbers, the timestamp jumps 2 s.
    timeline = Timeline()
    timeline.accept(rtp([bytes([0xF8])]))
    skipped = OpusPacket(
        sequence=1, timestamp=FRAME_20MS + 2 * SAMPLE_RATE, payload=b"\xf8", arrived_ns=0
    )
    ((_, _, silence),) = timeline.accept([skipped])
    assert silence == 2 * SAMPLE_RATE
    assert timeline.stats.lost_samples == 0


def test_a_packet_lost_beside_a_skipped_silence_is_no_audible_gap() -> None:
    # DTX, and the packet that ended the silence lost: 20 ms of audio went, not 2 s.
    timeline = Timeline()
    timeline.accept(rtp([bytes([0xF8])]))
    after = OpusPacket(
        sequence=2, timestamp=2 * FRAME_20MS + 2 * SAMPLE_RATE, payload=b"\xf8", arrived_ns=0
    )
    ((_, _, silence),) = timeline.accept([after])
    assert silence == FRAME_20MS + 2 * SAMPLE_RATE  # still filled, to keep the timeline
    assert timeline.stats.lost_samples == FRAME_20MS
    assert timeline.stats.gaps_over_100ms == 0
    # Six packets in a row lost while talking (120 ms) are one.
    speech = [
        OpusPacket(
            sequence=3 + i,
            timestamp=after.timestamp + (1 + i) * FRAME_20MS,
            payload=b"\xf8",
            arrived_ns=0,
        )
        for i in range(8)
    ]
    timeline.accept([speech[0], speech[7]])
    assert timeline.stats.gaps_over_100ms == 1


def test_a_track_file_keeps_the_packets_and_the_senders_timeline() -> None:
    payloads = opus_packets(3.0)
    packets = rtp(payloads)
    # One second of the call never arrived (sequence numbers 50..99).
    received = packets[:50] + packets[100:]
    sink = Collect()
    track = Track(sid="TR_a", participant_sid="PA_a", identity="alice", name="mic")

    class Writing:
        writer: OggOpusPacketWriter | None = None

        def packet_writer(self, channels: int) -> OggOpusPacketWriter:
            if self.writer is None:
                self.writer = OggOpusPacketWriter(sink, channels)
            return self.writer

    recording = Writing()
    track.recording = recording  # type: ignore[assignment]
    decoded = [track.ingest(received[i : i + 10]) for i in range(0, len(received), 10)]
    assert recording.writer is not None
    recording.writer.close()
    # The mix gets the received audio only; the file has the call's length, the lost
    # second concealed where it was.
    assert sum(len(d) for d in decoded if d is not None) == 100 * FRAME_20MS
    audio = decode_ogg(bytes(sink.data))
    assert abs(len(audio) / SAMPLE_RATE - 3.0) < 0.02
    # Tone (RMS 0.17 of full scale) before and after; the lost second concealed, not the
    # tone moved up to fill it.
    assert rms(audio, 0.0, 0.95) > 0.1 and rms(audio, 2.05, 2.95) > 0.1
    assert rms(audio, 1.2, 1.8) < 0.05
    # The stored packets are the sender's, byte for byte: no re-encoding.
    with av.open(io.BytesIO(bytes(sink.data))) as container:
        stored = [bytes(p) for p in container.demux(audio=0) if p.size]
    assert stored[:50] == payloads[:50]
    assert stored[50:100] == [plc_packet(payloads[0][0])] * 50
    assert stored[100:] == payloads[100:]


def test_dtx_packets_reach_the_file_but_not_the_mix() -> None:
    # Speech, then 1 s of silence sent as DTX (a 1-byte packet every 400 ms), then speech.
    speech = opus_packets(0.4)
    packets = rtp(speech[:10])
    for i, timestamp in enumerate((10 * FRAME_20MS, 30 * FRAME_20MS, 50 * FRAME_20MS)):
        packets.append(
            OpusPacket(sequence=10 + i, timestamp=timestamp, payload=b"\xf8", arrived_ns=0)
        )
    packets += [
        OpusPacket(sequence=13 + i, timestamp=(70 + i) * FRAME_20MS, payload=p, arrived_ns=0)
        for i, p in enumerate(speech[10:])
    ]
    track = Track(sid="TR_a", participant_sid="PA_a", identity="alice", name="mic")
    decoded = track.ingest(packets)
    assert decoded is not None
    assert len(decoded) == 20 * FRAME_20MS  # the speech only
    assert track.timeline.stats.lost_samples == 0


def test_an_offer_names_each_ssrcs_track() -> None:
    sdp = (
        "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
        "a=ssrc:3576780255 cname:PA_x|TR_AAA\r\n"
        "a=ssrc:3576780255 msid:PA_x|TR_AAA TR_AAA\r\n"
        "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
        "a=ssrc:42 msid:PA_y|TR_BBB TR_BBB\r\n"
    )
    assert ssrc_tracks(sdp) == {3576780255: "TR_AAA", 42: "TR_BBB"}
    answer = "a=rtpmap:111 opus/48000/2\r\na=rtpmap:63 red/48000/2\r\na=rtpmap:0 PCMU/8000\r\n"
    assert opus_payload_types(answer) == {111}


class FlakyUploader(Uploader):
    """Storage that is away for the first `failures` calls, then answers with `result`."""

    def __init__(self, failures: int, result: Exception | None = None) -> None:
        super().__init__(client=None, bucket="recordings")
        self.failures = failures
        self.result = result
        self.calls = 0

    def _call(self) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise OSError("connection refused")
        if self.result is not None:
            raise self.result

    def push(self, obj: SpooledObject) -> None:
        self._call()

    def put_small(self, key: str, body: bytes, content_type: str) -> None:
        self._call()


async def test_an_upload_retries_while_storage_is_away_but_not_a_failed_verification(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    obj = SpooledObject.create(tmp_path / "obj", "recordings/RM_test/EG_retry.ogg")
    uploader = FlakyUploader(failures=1)
    with caplog.at_level(logging.WARNING, logger="kaiwa.recorder"):
        await finish_upload(uploader, obj)
    assert uploader.calls == 2
    (record,) = [r for r in caplog.records if r.name == "kaiwa.recorder"]
    assert record.getMessage() == "upload failed; recording kept on local disk, retrying"
    assert getattr(record, "key", None) == obj.key
    # The stored object is there and wrong: another push cannot fix it.
    wrong = FlakyUploader(failures=0, result=VerificationError("stored size differs"))
    with pytest.raises(VerificationError):
        await finish_upload(wrong, obj)
    assert wrong.calls == 1


async def test_a_manifest_is_retried_while_storage_is_away(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    record = EgressRecord.create(tmp_path, lkegress.EgressInfo(egress_id="EG_retry"))
    uploader = FlakyUploader(failures=1)
    with caplog.at_level(logging.WARNING, logger="kaiwa.recorder"):
        await store_manifest(uploader, record, "recordings/RM_test/EG_retry.ogg")
    assert uploader.calls == 2
    messages = [r.getMessage() for r in caplog.records if r.name == "kaiwa.recorder"]
    assert messages == ["manifest upload failed; retrying"]
