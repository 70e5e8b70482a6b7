"""A subscribe-only LiveKit participant that hands over audio as the Opus packets it received.

The LiveKit SDK decodes every track it subscribes to (libwebrtc's NetEq, every 10 ms), which
a recorder storing the packets as they came does not need: in `kaiwa bench recorder` that
receive path alone cost 0.044 cores per two-speaker room. This client speaks LiveKit's
signalling protocol over its websocket (the messages come from livekit-protocol) and receives
media with aiortc, taking each RTP packet before aiortc's jitter buffer and decoder.

It does what a recorder needs and no more: join, answer the subscriber offers, trickle ICE,
keep-alive pings, and the room's participants and tracks. It never publishes, and it does not
reconnect: a lost connection ends it, and the recorder service starts a new recording.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtp import RtpPacket
from aiortc.sdp import candidate_from_sdp
from livekit.protocol import models as lkmodels
from livekit.protocol import rtc as lkrtc
from websockets.asyncio.client import ClientConnection, connect

from core.errors import KaiwaError
from core.tasks import TaskOwner

from .log import logger

# LiveKit's signalling protocol version this client speaks (that of the SDKs we test with).
PROTOCOL_VERSION = 16
JOIN_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class OpusPacket:
    """One received RTP packet of an Opus track, as it came off the wire (decrypted)."""

    sequence: int
    timestamp: int  # RTP clock: 48 kHz for Opus
    payload: bytes
    arrived_ns: int  # wall clock (time.time_ns) when it was received


PacketHandler = Callable[[str, OpusPacket], None]


class SubscriberError(KaiwaError):
    """The signalling or media connection to LiveKit could not be made or was lost."""


def signal_url(livekit_url: str, token: str) -> str:
    parts = urllib.parse.urlsplit(livekit_url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    query = urllib.parse.urlencode(
        {
            "access_token": token,
            "auto_subscribe": "1",
            "protocol": str(PROTOCOL_VERSION),
            "sdk": "python",
        }
    )
    return urllib.parse.urlunsplit((scheme, parts.netloc, "/rtc", query, ""))


_SSRC_MSID = re.compile(r"^a=ssrc:(\d+) msid:\S+ (\S+)", re.MULTILINE)
_OPUS_RTPMAP = re.compile(r"^a=rtpmap:(\d+) opus/48000", re.MULTILINE | re.IGNORECASE)


def ssrc_tracks(sdp: str) -> dict[int, str]:
    """SSRC → track sid, from an offer's `a=ssrc:<ssrc> msid:<stream> <track>` lines."""
    return {int(ssrc): track for ssrc, track in _SSRC_MSID.findall(sdp)}


def opus_payload_types(sdp: str) -> set[int]:
    """The payload types an SDP maps to Opus (not RED, which wraps Opus in its own format)."""
    return {int(pt) for pt in _OPUS_RTPMAP.findall(sdp)}


class Subscriber:
    """Joins a room, subscribes to every track, and calls `on_packet(track_sid, packet)` for
    each audio packet, on the event loop (keep it cheap: it runs 50 times a second a track).

    `participants` holds the others in the room (by participant sid) as LiveKit last described
    them; `changed` is set whenever that changes. `closed` is set when the connection ends;
    `lost` says it ended without LiveKit or us ending it (a dropped socket, failed media).
    """

    def __init__(self, on_packet: PacketHandler) -> None:
        self.on_packet = on_packet
        self.participants: dict[str, lkmodels.ParticipantInfo] = {}
        self.changed = asyncio.Event()
        self.closed = asyncio.Event()
        self.close_reason = ""
        self.lost = False
        self.local_sid = ""
        self._ws: ClientConnection | None = None
        self._pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self._pc.on("track", self._on_track)
        self._pc.on("connectionstatechange", self._on_connection_state)
        self._ssrc_tracks: dict[int, str] = {}
        # What aiortc's RTP routers hand a packet to, once `_route_by_offer` has them: only its
        # `_handle_rtp_packet` is called.
        self._tapper = SimpleNamespace(_handle_rtp_packet=self._tap)
        self._routed: set[int] = set()  # id() of each router already routing by offer
        self._opus_types: set[int] = set()
        self._early_candidates: list[dict[str, Any]] = []
        self._tasks = TaskOwner(logger)
        self._joined = asyncio.Event()

    # --- lifecycle ---------------------------------------------------------------------------

    async def connect(self, livekit_url: str, token: str) -> None:
        try:
            self._ws = await connect(signal_url(livekit_url, token), open_timeout=JOIN_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            raise SubscriberError(f"LiveKit could not be reached: {exc}") from exc
        except Exception as exc:  # websockets' handshake errors: a refused token, a bad URL
            raise SubscriberError(f"LiveKit refused the connection: {exc}") from exc
        self._tasks.spawn(self._read_signals(self._ws), "recorder-signals")
        try:
            await asyncio.wait_for(self._joined.wait(), JOIN_TIMEOUT_S)
        except TimeoutError:
            await self.close()
            raise SubscriberError("LiveKit did not answer the join") from None

    async def close(self) -> None:
        # Ended by us, before the socket closes: its reader would call that a lost connection.
        self._end("closed")
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._send(lkrtc.SignalRequest(leave=lkrtc.LeaveRequest()))
                await self._ws.close()
        await self._tasks.aclose()
        await self._pc.close()

    def _end(self, reason: str, *, lost: bool = False) -> None:
        if not self.closed.is_set():
            self.close_reason = reason
            self.lost = lost
            self.closed.set()
            self.changed.set()

    # --- signalling --------------------------------------------------------------------------

    async def _send(self, request: lkrtc.SignalRequest) -> None:
        assert self._ws is not None
        await self._ws.send(request.SerializeToString())

    async def _read_signals(self, ws: ClientConnection) -> None:
        try:
            async for raw in ws:
                if isinstance(raw, str):
                    continue
                await self._on_signal(lkrtc.SignalResponse.FromString(raw))
        except Exception as exc:  # a dropped socket or a message we could not apply
            logger.warning("signalling connection lost", extra={"error": str(exc)[:300]})
        finally:
            self._end("signalling connection closed", lost=True)

    async def _on_signal(self, message: lkrtc.SignalResponse) -> None:
        kind = message.WhichOneof("message")
        if kind == "join":
            join = message.join
            self.local_sid = join.participant.sid
            self._update_participants(join.other_participants)
            self._tasks.spawn(self._ping(join.ping_interval or 5), "recorder-ping")
            self._joined.set()
        elif kind == "update":
            self._update_participants(message.update.participants)
        elif kind == "offer":
            await self._answer(message.offer)
        elif kind == "trickle":
            if message.trickle.target == lkrtc.SignalTarget.SUBSCRIBER:
                await self._add_candidate(json.loads(message.trickle.candidateInit))
        elif kind == "leave":
            self._end(
                f"removed by the server: {lkmodels.DisconnectReason.Name(message.leave.reason)}"
            )

    async def _ping(self, interval_s: int) -> None:
        # Without pings the server drops the participant after ping_timeout.
        while True:
            await asyncio.sleep(interval_s)
            ping = lkrtc.Ping(timestamp=int(time.time() * 1000))
            await self._send(lkrtc.SignalRequest(ping_req=ping))

    def _update_participants(self, infos: Any) -> None:
        for info in infos:
            if info.sid == self.local_sid:
                continue
            if info.state == lkmodels.ParticipantInfo.State.DISCONNECTED:
                self.participants.pop(info.sid, None)
            else:
                known = self.participants.get(info.sid)
                # Updates may arrive out of order; `version` orders them.
                if known is None or info.version >= known.version:
                    self.participants[info.sid] = info
        self.changed.set()

    async def _answer(self, offer: lkrtc.SessionDescription) -> None:
        self._ssrc_tracks.update(ssrc_tracks(offer.sdp))
        await self._pc.setRemoteDescription(RTCSessionDescription(offer.sdp, "offer"))
        self._route_by_offer()
        for candidate in self._early_candidates:
            await self._add_candidate(candidate)
        self._early_candidates.clear()
        await self._pc.setLocalDescription(await self._pc.createAnswer())
        local = self._pc.localDescription
        # Our answer says which payload types carry plain Opus; browsers publish RED too, which
        # LiveKit strips for a subscriber that, like aiortc, does not accept it.
        self._opus_types = opus_payload_types(local.sdp)
        # aiortc gathers every candidate before answering: they travel in the answer.
        answer = lkrtc.SessionDescription(type="answer", sdp=local.sdp, id=offer.id)
        await self._send(lkrtc.SignalRequest(answer=answer))

    async def _add_candidate(self, init: dict[str, Any]) -> None:
        text = init.get("candidate") or ""
        if not text:
            return  # end of candidates
        if self._pc.remoteDescription is None:
            self._early_candidates.append(init)
            return
        candidate = candidate_from_sdp(
            text.split(":", 1)[1] if text.startswith("candidate:") else text
        )
        candidate.sdpMid = init.get("sdpMid")
        candidate.sdpMLineIndex = init.get("sdpMLineIndex")
        await self._pc.addIceCandidate(candidate)

    def _on_connection_state(self) -> None:
        if self._pc.connectionState in ("failed", "closed"):
            self._end(f"media connection {self._pc.connectionState}", lost=True)

    # --- media -------------------------------------------------------------------------------

    def _route_by_offer(self) -> None:
        """Every packet of a track an offer declared goes to `_tap`, before aiortc's own
        routing, which loses some.

        LiveKit gives a new track the transceiver of one that has gone. aiortc registers a
        receiver's SSRCs once, when it starts, so the new track's SSRC is known nowhere; it
        then routes by payload type, which with two audio receivers or more names none, and
        drops the packet. A caller who joined after another had left was not recorded at
        all, neither on their own nor in the mix."""
        for transceiver in self._pc.getTransceivers():
            router = transceiver.receiver.transport._rtp_router
            if id(router) in self._routed:
                continue
            self._routed.add(id(router))
            by_aiortc = router.route_rtp

            def route(packet: RtpPacket, by_aiortc: Any = by_aiortc) -> Any:
                return self._tapper if packet.ssrc in self._ssrc_tracks else by_aiortc(packet)

            router.route_rtp = route  # type: ignore[method-assign]

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind != "audio":
            return
        for transceiver in self._pc.getTransceivers():
            receiver = transceiver.receiver
            if receiver.track is track:
                # aiortc has no API for encoded media: take each packet where its receiver
                # would, before the jitter buffer and the decoder, which then stay idle.
                receiver._handle_rtp_packet = self._tap  # type: ignore[method-assign]

    async def _tap(self, packet: RtpPacket, arrival_time_ms: int) -> None:
        # By SSRC, as the offers declare them, not by the receiver aiortc chose: packets of a
        # new track can arrive before its negotiation ends, and aiortc then gives them to
        # another receiver of the same payload type, for good.
        track_sid = self._ssrc_tracks.get(packet.ssrc)
        if track_sid and packet.payload and packet.payload_type in self._opus_types:
            self.on_packet(
                track_sid,
                OpusPacket(
                    sequence=packet.sequence_number,
                    timestamp=packet.timestamp,
                    payload=packet.payload,
                    arrived_ns=time.time_ns(),
                ),
            )
