"""Names the processes agree on: the contract between the API, the agents, the recorder and
the apps (docs/mobile.md lists the ones a native app reads).

A name written here is written nowhere else; renaming one is a protocol change.
"""

from __future__ import annotations

from typing import Literal

# The agent that LiveKit dispatches to every room a caller's token creates.
AGENT_NAME = "kaiwa"

# What a call is: a spoken dialog with the agent, or people interpreted for each other.
Mode = Literal["dialog", "interpret"]

# Participant attributes.
# Set by the API from the caller's token and PUT /api/call/language: what they speak and hear.
LANGUAGE_ATTRIBUTE = "language"
MODE_ATTRIBUTE = "kaiwa.mode"
# Set by the API just before a caller leaves on purpose: a dialog then ends at once, rather
# than waiting for a reload to come back.
CALLER_ENDED_ATTRIBUTE = "kaiwa.ended"
# The agent's state as LiveKit's own agents publish it ("listening", "thinking", "speaking").
AGENT_STATE_ATTRIBUTE = "lk.agent.state"
# Interpretation: sentences a listener's voice dropped to keep up (bounded lag).
DROPPED_SENTENCES_ATTRIBUTE = "kaiwa.dropped_sentences"
# Set by the API (PUT /api/call/typing): "true" while a caller's message box has text in
# it, then "false".
TYPING_ATTRIBUTE = "kaiwa.typing"
# Set by the API (PUT /api/call/voice-replies): "off" while a dialog's caller reads the
# agent's replies instead of hearing them; "on" (or absent) while they hear them.
VOICE_REPLIES_ATTRIBUTE = "kaiwa.voice_replies"

# Set by LiveKit's SIP bridge on a phone caller's participant (docs.livekit.io/sip).
SIP_CALL_STATUS_ATTRIBUTE = "sip.callStatus"  # "ringing", "active" once answered, "hangup"
SIP_PHONE_NUMBER_ATTRIBUTE = "sip.phoneNumber"  # the caller's number
SIP_TRUNK_ID_ATTRIBUTE = "sip.trunkID"  # empty when the call matched no trunk: alarm on it

# Text-stream topics.
CAPTION_TOPIC = "lk.transcription"
NOTICE_TOPIC = "kaiwa.notice"
# Typed messages, as LiveKit's agents framework reads user text input.
CHAT_TOPIC = "lk.chat"

# A typed message's attributes: the id its page gave it, so a send retried after a reload
# or a reconnect is taken once. It is stored as `chat-<id>`; without one, the stream's id.
MESSAGE_ID = "kaiwa.message_id"
# On a notice about a typed message: which one, and why it was not taken.
NOTICE_REASON = "kaiwa.reason"
# Typed messages: the longest taken, and how many a participant may send in a window.
MAX_MESSAGE_CHARS = 2000
MESSAGES_PER_WINDOW = 10
MESSAGE_WINDOW_S = 10.0

# Caption attributes: LiveKit's transcription attributes, and Kaiwa's own.
SEGMENT_ID = "lk.segment_id"
TRACK_ID = "lk.transcribed_track_id"
FINAL = "lk.transcription_final"
SOURCE_SEGMENT_ID = "kaiwa.source_segment_id"
SPEAKER = "kaiwa.speaker"
START_S = "kaiwa.start_s"
END_S = "kaiwa.end_s"
# "text" on the caption of a typed message; absent on speech.
KIND = "kaiwa.kind"
# On a caption of speech heard in another language than its speaker set: that setting. The
# caption's own language is the one heard; such speech is not translated.
LANGUAGE_SETTING = "kaiwa.language_setting"

# Identities of the platform's own participants; a caller may not pose as one.
RESERVED_IDENTITY_PREFIXES = ("agent-", "kaiwa-", "recorder-", "sip_")
# The name every page gives an agent (web/src/main.js AGENT_NAME); a caller may not take it
# (core/text.py `poses_as`).
AGENT_DISPLAY_NAME = "Kaiwa"

# Worker presence in Redis: each agent worker refreshes `<prefix><worker id>` while it is
# registered (LiveKit has no API that lists workers), and /healthz reads the keys.
WORKER_KEY_PREFIX = "kaiwa:agent-workers:"
WORKER_KEY_TTL_S = 15
WORKER_KEY_REFRESH_S = 5


def worker_key(worker_id: str) -> str:
    return f"{WORKER_KEY_PREFIX}{worker_id}"


# A call's lease in Redis (agents/lease.py): the job serving a room holds `<prefix><room sid>`
# and refreshes it; the watchdog (agents/watchdog) re-dispatches a room whose caller has no
# leased agent. `<prefix><room sid>:gen` counts the agents dispatched to the room after the
# first, and fences older ones out.
CALL_LEASE_PREFIX = "kaiwa:call:"
CALL_LEASE_TTL_S = 3.0
CALL_LEASE_REFRESH_S = 1.0
# The dispatch metadata a re-dispatched agent gets on top of the room's original one.
RESUME_KEY = "resume"
GENERATION_KEY = "generation"
# Past the re-dispatch limit: the agent only apologises and ends the call (agents/apology.py).
APOLOGY_KEY = "apology"


def call_lease_key(room_sid: str) -> str:
    return f"{CALL_LEASE_PREFIX}{room_sid}"


# A room's generation counter outlives the room by this much (a room's sid is not reused).
CALL_GENERATION_TTL_S = 24 * 3600


def call_generation_key(room_sid: str) -> str:
    return f"{CALL_LEASE_PREFIX}{room_sid}:gen"
