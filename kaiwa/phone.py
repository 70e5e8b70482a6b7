"""A phone caller for tests and benches: SIPp dials the SIP bridge, a UDP socket of ours is
the phone's ear.

SIPp 3.6.1 (Debian's sip-tester) plays a raw codec file over RTP but cannot record what it
receives (`rtpcheck` came in 3.7), and `-rtp_echo` would feed the agent its own voice. So
the INVITE's SDP names our socket as the phone's media address: the bridge sends its audio
there, since it sends to the address in the SDP and accepts RTP from any source.

Every SIP message SIPp sent and received is read back from its message log, with the time
it was logged, so the answer time is INVITE → 180 and INVITE → 200 as the phone saw them.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import socket
import struct
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import av
import numpy as np
from google.protobuf.duration_pb2 import Duration
from livekit import api as lkapi

from core.protocol import LANGUAGE_ATTRIBUTE, MODE_ATTRIBUTE, Mode
from core.rooms import room_configuration
from kaiwa.stack.config import StackConfig
from kaiwa.stack.process import free_port, free_udp_range

# RTP payload types of the codecs a phone may offer (RFC 3551).
PAYLOAD_TYPES = {"PCMU": 0, "PCMA": 8, "G722": 9, "G729": 18}
TELEPHONE_EVENT = 101
# Samples per second each codec carries. G.722 is 16 kHz audio on an 8 kHz RTP clock (RFC
# 3551 keeps its 8000 for historical reasons).
CODEC_RATES = {"PCMU": 8000, "PCMA": 8000, "G722": 16000}
FRAME_MS = 20
# A sample above this (about -36 dBFS) is voice, not line noise.
VOICED_LEVEL = 500


# --- G.711 A-law (ITU-T G.711), with numpy: `audioop` is deprecated -------------------------


def _alaw_decode_table() -> np.ndarray[Any, np.dtype[np.int16]]:
    codes = np.arange(256, dtype=np.int32) ^ 0x55
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = np.where(
        exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0)
    )
    return np.where(codes & 0x80, magnitude, -magnitude).astype(np.int16)


ALAW_TO_PCM = _alaw_decode_table()


def alaw_decode(data: bytes) -> np.ndarray[Any, np.dtype[np.int16]]:
    return ALAW_TO_PCM[np.frombuffer(data, dtype=np.uint8)]


def alaw_encode(pcm: np.ndarray[Any, np.dtype[np.int16]]) -> bytes:
    """16-bit samples to A-law: the code whose decoded value is nearest each sample."""
    order = np.argsort(ALAW_TO_PCM)
    levels = ALAW_TO_PCM[order].astype(np.int32)
    samples = pcm.astype(np.int32)
    index = np.clip(np.searchsorted(levels, samples), 1, 255)
    nearer_below = (samples - levels[index - 1]) < (levels[index] - samples)
    index = np.where(nearer_below, index - 1, index)
    return bytes(order[index].astype(np.uint8))


def g722_encode(pcm16k: np.ndarray[Any, np.dtype[np.int16]]) -> bytes:
    encoder = av.CodecContext.create("g722", "w")
    encoder.sample_rate = 16000
    encoder.layout = "mono"
    encoder.format = "s16"
    frame = av.AudioFrame.from_ndarray(pcm16k.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = 16000
    packets = [*encoder.encode(frame), *encoder.encode(None)]
    return b"".join(bytes(p) for p in packets)


class G722Decoder:
    def __init__(self) -> None:
        self._decoder = av.CodecContext.create("g722", "r")
        self._decoder.sample_rate = 16000
        self._decoder.layout = "mono"

    def decode(self, payload: bytes) -> np.ndarray[Any, np.dtype[np.int16]]:
        frames = self._decoder.decode(av.Packet(payload))
        if not frames:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.int16)


def resample_to(
    pcm: np.ndarray[Any, np.dtype[np.int16]], rate: int, new_rate: int
) -> np.ndarray[Any, np.dtype[np.int16]]:
    """Linear resampling: enough for test speech going into a phone codec."""
    if rate == new_rate or len(pcm) == 0:
        return pcm
    positions = np.arange(int(len(pcm) * new_rate / rate)) * (rate / new_rate)
    resampled: np.ndarray[Any, np.dtype[np.int16]] = np.interp(
        positions, np.arange(len(pcm)), pcm
    ).astype(np.int16)
    return resampled


# --- the ear: the phone's RTP receiver ------------------------------------------------------


@dataclass
class RtpPacket:
    at: float  # wall clock (time.time()), to compare with SIPp's message log
    payload_type: int
    sequence: int
    timestamp: int
    payload: bytes


class Ear:
    """A UDP socket that keeps every RTP packet the bridge sends the phone."""

    def __init__(self) -> None:
        self.port = free_port(udp=True)
        self.packets: list[RtpPacket] = []
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", self.port))
        self._sock.settimeout(0.2)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._receive, name="phone-ear", daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._closed.is_set():
            try:
                data = self._sock.recv(2048)
            except TimeoutError:
                continue
            except OSError:
                return
            if len(data) < 12 or data[0] >> 6 != 2:
                continue
            count = data[0] & 0x0F
            sequence, timestamp = struct.unpack("!HI", data[2:8])
            self.packets.append(
                RtpPacket(time.time(), data[1] & 0x7F, sequence, timestamp, data[12 + 4 * count :])
            )

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=1)
        self._sock.close()

    def audio(self, codec: str) -> tuple[np.ndarray[Any, np.dtype[np.int16]], list[float]]:
        """What the phone heard, placed by RTP timestamp (gaps stay silent), and the wall
        clock time each 20 ms of it arrived."""
        payload_type = PAYLOAD_TYPES[codec]
        packets = [p for p in self.packets if p.payload_type == payload_type]
        rate = CODEC_RATES[codec]
        if not packets:
            return np.zeros(0, dtype=np.int16), []
        per_tick = rate // 8000  # samples per RTP clock tick
        decoder = G722Decoder() if codec == "G722" else None
        start = packets[0].timestamp
        chunks: list[tuple[int, np.ndarray[Any, np.dtype[np.int16]], float]] = []
        for packet in packets:
            pcm = decoder.decode(packet.payload) if decoder else alaw_decode(packet.payload)
            chunks.append((((packet.timestamp - start) & 0xFFFFFFFF) * per_tick, pcm, packet.at))
        length = max(offset + len(pcm) for offset, pcm, _ in chunks)
        out = np.zeros(length, dtype=np.int16)
        arrivals = [0.0] * (length // (rate * FRAME_MS // 1000) + 1)
        for offset, pcm, at in chunks:
            out[offset : offset + len(pcm)] = pcm
            arrivals[offset // (rate * FRAME_MS // 1000)] = at
        return out, arrivals


def first_voiced_at(
    pcm: np.ndarray[Any, np.dtype[np.int16]], arrivals: list[float], rate: int
) -> float | None:
    """When the first 20 ms of voice arrived (wall clock), or None if all was quiet."""
    step = rate * FRAME_MS // 1000
    for index in range(len(pcm) // step):
        if np.abs(pcm[index * step : (index + 1) * step].astype(np.int32)).max() > VOICED_LEVEL:
            return arrivals[index] or None
    return None


# --- SIPp -----------------------------------------------------------------------------------


@dataclass
class SipMessage:
    at: float  # wall clock
    sent: bool
    first_line: str
    text: str

    @property
    def status(self) -> int | None:
        match = re.match(r"SIP/2\.0 (\d{3})", self.first_line)
        return int(match.group(1)) if match else None


@dataclass
class PhoneCall:
    """One call as the phone places it."""

    bridge_port: int  # the bridge's SIP port on 127.0.0.1
    called: str  # the number dialled: the To user, which trunks match as `numbers`
    caller: str = "+15550100200"  # the From user: the caller's number
    # Offered, in order of preference. The phone speaks the first; the bridge answers with
    # the best it knows (G.722, then PCMU, then PCMA), so offer that one first.
    codecs: tuple[str, ...] = ("PCMA",)
    # What the phone says: 16-bit samples at `speech_rate`, played `speak_after_s` after the
    # answer (silence until then), then silence until `hang_up_after_s`.
    speech: np.ndarray[Any, np.dtype[np.int16]] | None = None
    speech_rate: int = 16000
    speak_after_s: float = 0.0
    hang_up_after_s: float = 10.0
    # The address the phone sends from, and the host its From header names (spoofable).
    local_ip: str = "127.0.0.1"
    from_host: str | None = None
    auth: tuple[str, str] | None = None  # digest username and password
    # How long SIPp waits for the answer before it gives up.
    answer_timeout_s: float = 30.0


@dataclass
class CallResult:
    returncode: int
    messages: list[SipMessage]
    ear: Ear
    codec: str  # the codec the answer chose ("" when there was no answer)
    log: str = ""
    invited_at: float | None = None
    ringing_at: float | None = None
    answered_at: float | None = None
    statuses: list[int] = field(default_factory=list)

    @property
    def answered(self) -> bool:
        return self.answered_at is not None

    def heard(self) -> tuple[np.ndarray[Any, np.dtype[np.int16]], int]:
        """What the phone heard, and its sample rate."""
        if not self.codec:
            return np.zeros(0, dtype=np.int16), 8000
        pcm, _ = self.ear.audio(self.codec)
        return pcm, CODEC_RATES[self.codec]

    def greeting_delay_s(self) -> float | None:
        """200 OK → the first voiced audio at the phone."""
        if not self.codec or self.answered_at is None:
            return None
        pcm, arrivals = self.ear.audio(self.codec)
        voiced = first_voiced_at(pcm, arrivals, CODEC_RATES[self.codec])
        return None if voiced is None else voiced - self.answered_at


SDP_RTPMAP = {"PCMU": "PCMU/8000", "PCMA": "PCMA/8000", "G722": "G722/8000", "G729": "G729/8000"}


def scenario_xml(call: PhoneCall, ear_port: int, audio_file: str, payload_type: int) -> str:
    """A UAC that calls, plays its audio file once, and hangs up (or gives up unanswered)."""
    from_host = call.from_host or call.local_ip
    formats = " ".join(str(PAYLOAD_TYPES[c]) for c in call.codecs)
    rtpmaps = "\n".join(f"a=rtpmap:{PAYLOAD_TYPES[c]} {SDP_RTPMAP[c]}" for c in call.codecs)
    sdp = f"""v=0
o=phone 1 1 IN IP4 127.0.0.1
s=kaiwa test phone
c=IN IP4 127.0.0.1
t=0 0
m=audio {ear_port} RTP/AVP {formats} {TELEPHONE_EVENT}
{rtpmaps}
a=rtpmap:{TELEPHONE_EVENT} telephone-event/8000
a=fmtp:{TELEPHONE_EVENT} 0-16
a=ptime:20
a=sendrecv"""

    def invite(cseq: int, auth: str) -> str:
        return f"""  <send retrans="500">
    <![CDATA[
INVITE sip:{call.called}@127.0.0.1:{call.bridge_port} SIP/2.0
Via: SIP/2.0/UDP [local_ip]:[local_port];branch=[branch]
From: "Phone" <sip:{call.caller}@{from_host}>;tag=[pid]phone[call_number]
To: <sip:{call.called}@127.0.0.1:{call.bridge_port}>
Call-ID: [call_id]
CSeq: {cseq} INVITE
Contact: <sip:{call.caller}@[local_ip]:[local_port]>
Max-Forwards: 70
{auth}Content-Type: application/sdp
Content-Length: [len]

{sdp}
    ]]>
  </send>
"""

    ack = """  <send>
    <![CDATA[
ACK sip:{called}@127.0.0.1:{port} SIP/2.0
Via: SIP/2.0/UDP [local_ip]:[local_port];branch=[branch]
From: "Phone" <sip:{caller}@{host}>;tag=[pid]phone[call_number]
To: <sip:{called}@127.0.0.1:{port}>[peer_tag_param]
Call-ID: [call_id]
CSeq: {cseq} ACK
Contact: <sip:{caller}@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Length: 0

    ]]>
  </send>
"""

    def ack_for(cseq: int) -> str:
        return ack.format(
            called=call.called, port=call.bridge_port, caller=call.caller, host=from_host, cseq=cseq
        )

    timeout_ms = int(call.answer_timeout_s * 1000)
    parts = ['<?xml version="1.0" encoding="ISO-8859-1" ?>', '<scenario name="kaiwa phone">']
    cseq = 1
    if call.auth is not None:
        parts.append(invite(cseq, ""))
        parts.append('  <recv response="100" optional="true"/>')
        parts.append('  <recv response="407" auth="true"/>')
        parts.append(ack_for(cseq))
        cseq = 2
        parts.append(invite(cseq, "[authentication]\n"))
    else:
        parts.append(invite(cseq, ""))
    parts += [
        '  <label id="1"/>',
        '  <recv response="100" optional="true" next="1"/>',
        '  <recv response="180" optional="true" next="1"/>',
        '  <recv response="183" optional="true" next="1"/>',
        f'  <recv response="200" rrs="true" timeout="{timeout_ms}"/>',
        ack_for(cseq),
        f'  <nop><action><exec rtp_stream="{audio_file},1,{payload_type}"/></action></nop>',
        f'  <pause milliseconds="{int(call.hang_up_after_s * 1000)}"/>',
        """  <send retrans="500">
    <![CDATA[
BYE [next_url] SIP/2.0
Via: SIP/2.0/UDP [local_ip]:[local_port];branch=[branch]
[last_From:]
[last_To:]
[last_Call-ID:]
CSeq: {cseq} BYE
Contact: <sip:{caller}@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Length: 0

    ]]>
  </send>""".replace("{cseq}", str(cseq + 1)).replace("{caller}", call.caller),
        '  <recv response="200" crlf="true"/>',
        "</scenario>",
    ]
    return "\n".join(parts)


_LOG_HEADER = re.compile(r"^-{10,} (\d{4}-\d\d-\d\d\s+\d\d:\d\d:\d\d\.\d+)", re.M)
_LOG_KIND = re.compile(r"^(?:UDP|TCP) message (sent|received)", re.M)


def parse_message_log(text: str) -> list[SipMessage]:
    """SIPp's -trace_msg log: a dashed line with the local time, a line saying sent or
    received, then the message."""
    messages = []
    blocks = _LOG_HEADER.split(text)
    for stamp, body in zip(blocks[1::2], blocks[2::2], strict=False):
        kind = _LOG_KIND.search(body)
        if kind is None:
            continue
        message = body[kind.end() :].split("\n", 1)[1].strip() if "\n" in body[kind.end() :] else ""
        first_line = message.split("\n", 1)[0].strip()
        at = datetime.strptime(stamp.strip(), "%Y-%m-%d %H:%M:%S.%f").timestamp()
        messages.append(SipMessage(at, kind.group(1) == "sent", first_line, message))
    return messages


def sdp_codec(message: SipMessage) -> str:
    """The codec an SDP answer chose: the first format of its audio line."""
    match = re.search(r"^m=audio \d+ RTP/AVP (\d+)", message.text, re.M)
    if not match:
        return ""
    names = {v: k for k, v in PAYLOAD_TYPES.items()}
    return names.get(int(match.group(1)), "")


def sipp_binary() -> str:
    found = shutil.which("sipp")
    if found is None:
        raise FileNotFoundError("sipp is not installed (apt-get install sip-tester)")
    return found


async def place_call(call: PhoneCall) -> CallResult:
    """Dial, play the speech, hang up; return what the phone sent, received and heard.

    The ear stays open after the call: the caller reads what it heard from the result and
    closes it (`result.ear.close()`)."""
    ear = Ear()
    codec = call.codecs[0]
    with tempfile.TemporaryDirectory(prefix="kaiwa-phone-") as work:
        folder = Path(work)
        audio_file = folder / "speech.raw"
        audio_file.write_bytes(phone_audio(call, codec))
        scenario = folder / "call.xml"
        scenario.write_text(
            scenario_xml(call, ear.port, str(audio_file), PAYLOAD_TYPES.get(codec, 8))
        )
        argv = [
            f"127.0.0.1:{call.bridge_port}",
            "-i",
            call.local_ip,
            "-p",
            str(free_port(udp=True)),
            "-mi",
            call.local_ip,
            "-s",
            call.called,
            "-timeout",
            f"{int(call.answer_timeout_s + call.hang_up_after_s + 10)}s",
        ]
        if call.auth is not None:
            argv += ["-au", call.auth[0], "-ap", call.auth[1]]
        returncode, messages, output = await run_sipp(folder, scenario, argv, ear)
    result = CallResult(returncode=returncode, messages=messages, ear=ear, codec="", log=output)
    invites = [m for m in messages if m.sent and m.first_line.startswith("INVITE")]
    result.invited_at = invites[-1].at if invites else None
    received = [m for m in messages if not m.sent and m.status is not None]
    result.statuses = [m.status for m in received if m.status is not None]
    if (ringing := next((m for m in received if m.status == 180), None)) and invites:
        result.ringing_at = ringing.at
    answer = next((m for m in received if m.status == 200 and _cseq_method(m) == "INVITE"), None)
    if answer is not None:
        result.answered_at = answer.at
        result.codec = sdp_codec(answer)
    return result


def _cseq_method(message: SipMessage) -> str:
    match = re.search(r"^CSeq:\s*\d+\s+(\w+)", message.text, re.M)
    return match.group(1) if match else ""


async def run_sipp(
    folder: Path, scenario: Path, argv: list[str], ear: Ear
) -> tuple[int, list[SipMessage], str]:
    """Run one SIPp call in `folder`; its exit code, its messages and the end of its output.
    Cancelled, it puts the phone down (and closes the ear) whatever the scenario says."""
    log = folder / "messages.log"
    proc = await asyncio.create_subprocess_exec(
        sipp_binary(),
        *argv,
        "-sf",
        str(scenario),
        "-m",
        "1",
        "-mp",
        free_udp_range(4).split("-")[0],
        "-nostdin",
        "-nd",
        "-trace_msg",
        "-message_file",
        str(log),
        "-timeout_error",
        cwd=folder,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await proc.communicate()
    except asyncio.CancelledError:
        proc.kill()
        await proc.wait()
        ear.close()
        raise
    messages = parse_message_log(log.read_text(errors="replace")) if log.exists() else []
    return proc.returncode or 0, messages, output.decode(errors="replace")[-4000:]


@dataclass
class AnsweringPhone:
    """A phone that is called: SIPp answering on `port` after ringing `ring_s`, sending
    silence, until the far end hangs up (or `wait_s` passes)."""

    port: int = field(default_factory=lambda: free_port(udp=True))
    ring_s: float = 1.0
    wait_s: float = 60.0


def answering_xml(phone: AnsweringPhone, ear_port: int, audio_file: str) -> str:
    reply_headers = """[last_Via:]
[last_From:]
[last_To:];tag=[pid]answer[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:phone@[local_ip]:[local_port]>"""
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="kaiwa answering phone">
  <recv request="INVITE" crlf="true"/>
  <send>
    <![CDATA[
SIP/2.0 180 Ringing
{reply_headers}
Content-Length: 0

    ]]>
  </send>
  <pause milliseconds="{int(phone.ring_s * 1000)}"/>
  <send retrans="500">
    <![CDATA[
SIP/2.0 200 OK
{reply_headers}
Content-Type: application/sdp
Content-Length: [len]

v=0
o=phone 1 1 IN IP4 127.0.0.1
s=kaiwa test phone
c=IN IP4 127.0.0.1
t=0 0
m=audio {ear_port} RTP/AVP 8 {TELEPHONE_EVENT}
a=rtpmap:8 PCMA/8000
a=rtpmap:{TELEPHONE_EVENT} telephone-event/8000
a=ptime:20
a=sendrecv
    ]]>
  </send>
  <recv request="ACK" crlf="true"/>
  <nop><action><exec rtp_stream="{audio_file},1,8"/></action></nop>
  <recv request="BYE" timeout="{int(phone.wait_s * 1000)}"/>
  <send>
    <![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

    ]]>
  </send>
</scenario>
"""


async def answer_call(phone: AnsweringPhone) -> CallResult:
    """Wait for a call on `phone.port`, answer it, and hear it until the far end hangs up.
    `invited_at` is when the INVITE came, `answered_at` when the phone said 200 OK."""
    ear = Ear()
    with tempfile.TemporaryDirectory(prefix="kaiwa-phone-") as work:
        folder = Path(work)
        audio_file = folder / "silence.al"
        audio_file.write_bytes(alaw_encode(np.zeros(int(phone.wait_s * 8000), dtype=np.int16)))
        scenario = folder / "answer.xml"
        scenario.write_text(answering_xml(phone, ear.port, str(audio_file)))
        argv = [
            "-i",
            "127.0.0.1",
            "-p",
            str(phone.port),
            "-mi",
            "127.0.0.1",
            "-timeout",
            f"{int(phone.wait_s + phone.ring_s + 30)}s",
        ]
        returncode, messages, output = await run_sipp(folder, scenario, argv, ear)
    result = CallResult(returncode=returncode, messages=messages, ear=ear, codec="", log=output)
    invite = next((m for m in messages if not m.sent and m.first_line.startswith("INVITE")), None)
    result.invited_at = invite.at if invite else None
    sent = [m for m in messages if m.sent and m.status is not None]
    result.statuses = [m.status for m in sent if m.status is not None]
    if ringing := next((m for m in sent if m.status == 180), None):
        result.ringing_at = ringing.at
    if answer := next((m for m in sent if m.status == 200 and _cseq_method(m) == "INVITE"), None):
        result.answered_at = answer.at
        result.codec = "PCMA"
    return result


def phone_audio(call: PhoneCall, codec: str) -> bytes:
    """The whole call's audio in `codec`: silence, the speech, then silence to the hang-up."""
    rate = CODEC_RATES.get(codec, 8000)
    total = int(call.hang_up_after_s * rate)
    pcm = np.zeros(total, dtype=np.int16)
    if call.speech is not None:
        speech = resample_to(call.speech, call.speech_rate, rate)
        start = int(call.speak_after_s * rate)
        speech = speech[: max(0, total - start)]
        pcm[start : start + len(speech)] = speech
    if codec == "G722":
        return g722_encode(pcm)
    return alaw_encode(pcm)


@contextlib.contextmanager
def closing_ear(result: CallResult) -> Any:
    try:
        yield result
    finally:
        result.ear.close()


# --- numbers: a trunk and a dispatch rule in the stack's LiveKit --------------------------


def livekit_api(cfg: StackConfig) -> lkapi.LiveKitAPI:
    return lkapi.LiveKitAPI(
        f"http://127.0.0.1:{cfg.ports.livekit}",
        cfg.secrets.livekit_api_key,
        cfg.secrets.livekit_api_secret,
    )


@dataclass
class Line:
    """One inbound number: its trunk and dispatch rule."""

    number: str
    trunk_id: str
    rule_id: str
    room_prefix: str


@contextlib.asynccontextmanager
async def phone_line(
    cfg: StackConfig,
    number: str,
    *,
    mode: Mode = "dialog",
    scenario: str | None = "assistant",
    language: str = "en",
    allowed_addresses: tuple[str, ...] = ("127.0.0.1/32",),
    auth: tuple[str, str] | None = None,
    ringing_timeout_s: int = 15,
    room_prefix: str = "phone",
    agent_name: str | None = None,
    room_name: str | None = None,
) -> AsyncIterator[Line]:
    """A trunk for `number` and a rule that puts its calls in a new room with the agent
    (`agent_name`: another one, which no worker serves); both deleted afterwards (LiveKit
    refuses a second trunk on the same number). With `room_name`, calls join that room."""
    room_config = room_configuration(mode=mode, scenario=scenario, record=True, max_participants=8)
    if agent_name is not None:
        room_config.agents[0].agent_name = agent_name
    async with livekit_api(cfg) as lk:
        trunk = await lk.sip.create_inbound_trunk(
            lkapi.CreateSIPInboundTrunkRequest(
                trunk=lkapi.SIPInboundTrunkInfo(
                    name=f"test {number}",
                    numbers=[number],
                    allowed_addresses=list(allowed_addresses),
                    auth_username=auth[0] if auth else "",
                    auth_password=auth[1] if auth else "",
                    ringing_timeout=Duration(seconds=ringing_timeout_s),
                )
            )
        )
        rule = await lk.sip.create_dispatch_rule(
            lkapi.CreateSIPDispatchRuleRequest(
                dispatch_rule=lkapi.SIPDispatchRuleInfo(
                    name=f"test {number}",
                    trunk_ids=[trunk.sip_trunk_id],
                    rule=lkapi.SIPDispatchRule(
                        dispatch_rule_direct=lkapi.SIPDispatchRuleDirect(room_name=room_name)
                    )
                    if room_name
                    else lkapi.SIPDispatchRule(
                        dispatch_rule_callee=lkapi.SIPDispatchRuleCallee(
                            room_prefix=room_prefix, randomize=True
                        )
                    ),
                    attributes={LANGUAGE_ATTRIBUTE: language, MODE_ATTRIBUTE: mode},
                    room_config=room_config,
                )
            )
        )
        try:
            yield Line(number, trunk.sip_trunk_id, rule.sip_dispatch_rule_id, room_prefix)
        finally:
            await lk.sip.delete_dispatch_rule(
                lkapi.DeleteSIPDispatchRuleRequest(sip_dispatch_rule_id=rule.sip_dispatch_rule_id)
            )
            await lk.sip.delete_trunk(lkapi.DeleteSIPTrunkRequest(sip_trunk_id=trunk.sip_trunk_id))


async def room_of(cfg: StackConfig, identity: str, timeout_s: float = 20.0) -> str:
    """The room the participant `identity` (a phone caller: `sip_<number>`) is in."""
    deadline = time.monotonic() + timeout_s
    async with livekit_api(cfg) as lk:
        while time.monotonic() < deadline:
            for room in (await lk.room.list_rooms(lkapi.ListRoomsRequest())).rooms:
                people = await lk.room.list_participants(
                    lkapi.ListParticipantsRequest(room=room.name)
                )
                if any(p.identity == identity for p in people.participants):
                    return str(room.name)
            await asyncio.sleep(0.2)
    raise TimeoutError(f"{identity} joined no room within {timeout_s:.0f} s")


# --- a flood of INVITEs ---------------------------------------------------------------------


@dataclass
class FloodResult:
    sent: int  # INVITEs SIPp sent
    provisional: int  # of those, answered with 180 (the bridge says it before asking LiveKit)
    elapsed_s: float

    @property
    def rate_per_s(self) -> float:
        return self.sent / self.elapsed_s if self.elapsed_s else 0.0


def flood_xml(called: str, bridge_port: int) -> str:
    """One INVITE per call, no retransmission, no media; the call is over at its 180."""
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="kaiwa flood">
  <send>
    <![CDATA[
INVITE sip:{called}@127.0.0.1:{bridge_port} SIP/2.0
Via: SIP/2.0/UDP [local_ip]:[local_port];branch=[branch]
From: <sip:+15559990000@[local_ip]>;tag=[pid]flood[call_number]
To: <sip:{called}@127.0.0.1:{bridge_port}>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: <sip:flood@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

v=0
o=flood 1 1 IN IP4 [local_ip]
s=-
c=IN IP4 [local_ip]
t=0 0
m=audio 9 RTP/AVP 8
a=rtpmap:8 PCMA/8000
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" timeout="5000"/>
</scenario>
"""


async def flood(
    bridge_port: int, called: str, *, local_ip: str, rate_per_s: int, seconds: int
) -> FloodResult:
    """INVITEs from `local_ip` at `rate_per_s` for `seconds`, as fast as SIPp keeps up."""
    total = rate_per_s * seconds
    with tempfile.TemporaryDirectory(prefix="kaiwa-flood-") as work:
        scenario = Path(work) / "flood.xml"
        scenario.write_text(flood_xml(called, bridge_port))
        stats = Path(work) / "stats.csv"
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            sipp_binary(),
            f"127.0.0.1:{bridge_port}",
            "-sf",
            str(scenario),
            "-i",
            local_ip,
            "-p",
            str(free_port(udp=True)),
            "-r",
            str(rate_per_s),
            "-m",
            str(total),
            "-l",
            str(rate_per_s * 6),  # calls at once: each waits at most 5 s for its 180
            "-nr",
            "-nostdin",
            "-nd",
            "-timeout",
            f"{seconds * 2 + 30}s",
            "-trace_stat",
            "-stf",
            str(stats),
            "-fd",
            "1",
            cwd=work,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        await proc.wait()
        elapsed = time.monotonic() - started
        rows = stats.read_text(errors="replace").splitlines() if stats.exists() else []
    sent = provisional = 0
    if len(rows) >= 2:
        header = rows[0].split(";")
        last = rows[-1].split(";")
        column = dict(zip(header, last, strict=False))
        sent = int(column.get("OutgoingCall(C)", "0") or 0)
        provisional = int(column.get("SuccessfulCall(C)", "0") or 0)
    return FloodResult(sent=sent, provisional=provisional, elapsed_s=elapsed)
